//! A tunnel (an upgraded WebSocket) carries no more requests to decide, so regate judges it
//! as a whole: it is closed when the client's certificate expires, when a new CA bundle no
//! longer verifies the client, when a policy or data reload denies what opened it
//! (revocation in data), when the kill switch revokes its caller, and at shutdown. Each end is
//! recorded with its reason.

#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;
use common::*;
use std::time::Duration;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio_rustls::client::TlsStream;

/// WebSockets for callers that are not revoked.
const POLICY: &str = r#"package regate.authz

default allow := false

allow if {
	input.upgrade == "websocket"
	not input.peer.spiffe_id in data.revoked
}
"#;

const NOBODY_REVOKED: &str = r#"{"revoked": []}"#;

async fn open_tunnel(regate: &Regate, setup: &Setup, client: &Identity) -> TlsStream<TcpStream> {
    let mut tls = regate
        .connect(setup.client_config(Some(client), &[b"http/1.1"]))
        .await
        .unwrap();
    tls.write_all(
        b"GET /ws HTTP/1.1\r\nhost: localhost\r\nconnection: upgrade\r\nupgrade: websocket\r\n\r\n",
    )
    .await
    .unwrap();
    let answer = read_response(&mut tls).await;
    assert_eq!(status_of(&answer), 101, "{answer}");
    tls.write_all(b"hello").await.unwrap();
    let mut echo = [0u8; 5];
    tls.read_exact(&mut echo).await.unwrap();
    assert_eq!(&echo, b"hello");
    tls
}

/// Whether the tunnel ends (EOF or an error on read) within ten seconds.
async fn closes(tls: &mut TlsStream<TcpStream>) -> bool {
    let mut buf = [0u8; 16];
    matches!(
        tokio::time::timeout(Duration::from_secs(10), tls.read(&mut buf)).await,
        Ok(Ok(0)) | Ok(Err(_))
    )
}

async fn tunnel_record(regate: &Regate, total: usize) -> serde_json::Value {
    regate
        .decisions(total)
        .await
        .into_iter()
        .find(|r| r["event"] == "tunnel_closed")
        .expect("a tunnel record")
}

async fn reload(regate: &Regate) {
    let reloader = regate.reloader.clone();
    tokio::task::spawn_blocking(move || reloader.reload_all())
        .await
        .unwrap();
}

fn start_setup() -> Setup {
    Setup::new(&[("authz.rego", POLICY), ("data.json", NOBODY_REVOKED)])
}

#[tokio::test]
async fn a_revocation_in_data_closes_an_open_tunnel() {
    let setup = start_setup();
    let upstream = SwitchingUpstream::start().await;
    let regate = setup.start(&upstream.url(), &[]).await;
    let mut tunnel = open_tunnel(&regate, &setup, &setup.ca.client(SUMMARIZER)).await;
    let other = open_tunnel(&regate, &setup, &setup.ca.client(EXECUTOR)).await;

    setup.write_policy("data.json", &format!(r#"{{"revoked": ["{SUMMARIZER}"]}}"#));
    reload(&regate).await;
    assert!(
        closes(&mut tunnel).await,
        "the revoked caller's tunnel stayed open"
    );
    let record = tunnel_record(&regate, 3).await;
    assert_eq!(record["reason"], "denied");
    assert_eq!(record["spiffe_id"], SUMMARIZER);
    assert_eq!(record["bytes_from_client"], 5);
    assert_ne!(
        record["policy_revision"],
        regate.decisions(1).await[0]["policy_revision"],
        "the record names the revision that closed it"
    );

    // Another caller's tunnel is untouched.
    let mut other = other;
    other.write_all(b"still").await.unwrap();
    let mut echo = [0u8; 5];
    other.read_exact(&mut echo).await.unwrap();
    assert_eq!(&echo, b"still");
    regate.stop().await;
}

#[tokio::test]
async fn the_kill_switch_closes_the_revoked_callers_tunnel() {
    let setup = start_setup();
    let upstream = SwitchingUpstream::start().await;
    let regate = setup.start(&upstream.url(), &[]).await;
    let mut tunnel = open_tunnel(&regate, &setup, &setup.ca.client(SUMMARIZER)).await;
    let mut other = open_tunnel(&regate, &setup, &setup.ca.client(EXECUTOR)).await;

    let body = format!(r#"{{"spiffe_id": "{SUMMARIZER}", "reason": "runaway agent"}}"#);
    let (status, _) = admin_send(regate.admin, "POST", "/revocations", &body).await;
    assert_eq!(status, 201);
    assert!(
        closes(&mut tunnel).await,
        "the revoked caller's tunnel stayed open"
    );
    let record = tunnel_record(&regate, 4).await;
    assert_eq!(record["reason"], "revoked");
    assert_eq!(record["spiffe_id"], SUMMARIZER);

    other.write_all(b"still").await.unwrap();
    let mut echo = [0u8; 5];
    other.read_exact(&mut echo).await.unwrap();
    assert_eq!(&echo, b"still");
    regate.stop().await;
}

#[tokio::test]
async fn a_ca_bundle_that_no_longer_verifies_the_client_closes_its_tunnel() {
    let setup = start_setup();
    let upstream = SwitchingUpstream::start().await;
    let regate = setup.start(&upstream.url(), &[]).await;
    let mut tunnel = open_tunnel(&regate, &setup, &setup.ca.client(SUMMARIZER)).await;

    let other_ca = Ca::new("another root CA");
    replace_file(&setup.path("ca.pem"), &other_ca.pem);
    reload(&regate).await;
    assert!(
        closes(&mut tunnel).await,
        "the tunnel survived the CA change"
    );
    let record = tunnel_record(&regate, 2).await;
    assert_eq!(record["reason"], "untrusted_issuer");
    regate.stop().await;
}

#[tokio::test]
async fn a_tunnel_closes_when_the_client_certificate_expires() {
    let setup = start_setup();
    let upstream = SwitchingUpstream::start().await;
    let regate = setup.start(&upstream.url(), &[]).await;
    let short = setup
        .ca
        .client_valid_for(SUMMARIZER, Duration::from_secs(2));
    let mut tunnel = open_tunnel(&regate, &setup, &short).await;
    assert!(
        closes(&mut tunnel).await,
        "the tunnel outlived the certificate"
    );
    let record = tunnel_record(&regate, 2).await;
    assert_eq!(record["reason"], "certificate_expired");
    regate.stop().await;
}

#[tokio::test]
async fn shutdown_closes_tunnels_and_records_them() {
    let setup = start_setup();
    let upstream = SwitchingUpstream::start().await;
    let regate = setup.start(&upstream.url(), &[]).await;
    let mut tunnel = open_tunnel(&regate, &setup, &setup.ca.client(SUMMARIZER)).await;
    let decisions = regate.decisions.clone();
    regate.stop().await;
    assert!(closes(&mut tunnel).await);
    let records = wait_for_lines(&decisions, 2).await;
    let record = records
        .iter()
        .find(|r| r["event"] == "tunnel_closed")
        .unwrap();
    assert_eq!(record["reason"], "shutdown");
}
