//! DNS rebinding: a web page on `attacker.example`, its name then pointed at 127.0.0.1, reads
//! the admin listener as its own origin. The admin listener answers only requests that name
//! it in `Host` (its address, localhost, an `--admin-host` name); anything else is 421, so the
//! page reads neither `/status`, nor the identity inventory, nor the revocations, and changes
//! nothing. The health listener, which kubelet and Prometheus reach by the pod IP or any name,
//! answers whatever `Host` a probe sends.

#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;
use common::*;

use std::net::SocketAddr;
use std::time::Duration;

use tokio::io::AsyncWriteExt;

/// Send `method path` with `Host: host` (none if `None`) to an admin listener: (status, body).
async fn ask(addr: SocketAddr, method: &str, path: &str, host: Option<&str>) -> (u16, String) {
    let mut head = format!("{method} {path} HTTP/1.1\r\n");
    if let Some(host) = host {
        head.push_str(&format!("host: {host}\r\n"));
    }
    let body = match method {
        "POST" => format!(r#"{{"spiffe_id": "{SUMMARIZER}", "reason": "rebound"}}"#),
        _ => String::new(),
    };
    head.push_str(&format!(
        "content-type: application/json\r\ncontent-length: {}\r\nconnection: close\r\n\r\n{body}",
        body.len()
    ));
    let mut tcp = tokio::net::TcpStream::connect(addr).await.unwrap();
    tcp.write_all(head.as_bytes()).await.unwrap();
    let answer = read_response(&mut tcp).await;
    let body = answer
        .split_once("\r\n\r\n")
        .map(|(_, b)| b.to_string())
        .unwrap_or_default();
    (status_of(&answer), body)
}

#[tokio::test]
async fn a_rebound_name_gets_421_on_every_admin_endpoint_and_changes_nothing() {
    let setup = Setup::new(&[("authz.rego", ALLOW_DOCS)]);
    let upstream = Upstream::start().await;
    let regate = setup.start(&upstream.url(), &[]).await;
    let admin = regate.admin;

    for (method, path) in [
        ("GET", "/status"),
        ("GET", "/identities"),
        ("GET", "/revocations"),
        ("POST", "/revocations"),
        ("DELETE", "/revocations/some-id"),
        ("GET", "/metrics"),
        ("GET", "/healthz"),
    ] {
        for host in [
            "attacker.example",
            "attacker.example:9901",
            "localhost.attacker.example",
        ] {
            let (status, body) = ask(admin, method, path, Some(host)).await;
            assert_eq!(status, 421, "{method} {path} Host: {host}: {body}");
            assert!(!body.contains("revision"), "{body}");
        }
    }
    // No Host at all, two of them, or an absolute target naming another host.
    assert_eq!(ask(admin, "GET", "/status", None).await.0, 421);
    let mut tcp = tokio::net::TcpStream::connect(admin).await.unwrap();
    tcp.write_all(
        b"GET /status HTTP/1.1\r\nhost: localhost\r\nhost: attacker.example\r\nconnection: close\r\n\r\n",
    )
    .await
    .unwrap();
    assert_eq!(status_of(&read_response(&mut tcp).await), 421);
    let (status, _) = ask(
        admin,
        "GET",
        "http://attacker.example/status",
        Some("localhost"),
    )
    .await;
    assert_eq!(status, 421);

    // Nothing was revoked by the rebound POST.
    let (status, listed) = admin_get(admin, "/revocations").await;
    assert_eq!((status, listed.trim()), (200, r#"{"revocations":[]}"#));
    regate.stop().await;
}

#[tokio::test]
async fn the_admin_listener_answers_its_address_localhost_and_the_names_it_is_given() {
    let setup = Setup::new(&[("authz.rego", ALLOW_DOCS)]);
    let upstream = Upstream::start().await;
    let regate = setup
        .start(&upstream.url(), &["--admin-host", "regate-admin.internal"])
        .await;
    let admin = regate.admin;
    let own = admin.to_string();
    // The port is not compared: a port-forward reaches it under another one.
    for host in [
        "localhost",
        "localhost:19901",
        &own,
        "127.0.0.1",
        "regate-admin.internal",
        "Regate-Admin.Internal:9901",
    ] {
        let (status, body) = ask(admin, "GET", "/status", Some(host)).await;
        assert_eq!(status, 200, "Host: {host}: {body}");
    }
    assert_eq!(
        ask(admin, "GET", "/status", Some("other.internal")).await.0,
        421
    );
    // HTTP/1.0 may leave Host out; no browser does.
    let mut tcp = tokio::net::TcpStream::connect(admin).await.unwrap();
    tcp.write_all(b"GET /healthz HTTP/1.0\r\n\r\n")
        .await
        .unwrap();
    assert_eq!(status_of(&read_response(&mut tcp).await), 200);
    regate.stop().await;
}

#[tokio::test]
async fn the_admin_listener_speaks_only_http1_so_no_authority_can_name_another_host() {
    let setup = Setup::new(&[("authz.rego", ALLOW_DOCS)]);
    let upstream = Upstream::start().await;
    let regate = setup.start(&upstream.url(), &[]).await;
    // An HTTP/2 client with prior knowledge gets no answer at all, whatever its :authority.
    let tcp = tokio::net::TcpStream::connect(regate.admin).await.unwrap();
    let answered = async {
        let (mut send, conn) = hyper::client::conn::http2::handshake(
            hyper_util::rt::TokioExecutor::new(),
            hyper_util::rt::TokioIo::new(tcp),
        )
        .await
        .ok()?;
        tokio::spawn(conn);
        let req = http::Request::builder()
            .uri("http://attacker.example/status")
            .body(http_body_util::Empty::<bytes::Bytes>::new())
            .unwrap();
        send.send_request(req).await.ok()
    };
    let answer = tokio::time::timeout(Duration::from_secs(10), answered)
        .await
        .expect("the exchange ends, one way or the other");
    assert!(
        answer.is_none(),
        "an HTTP/2 request was answered: {answer:?}"
    );
    regate.stop().await;
}

#[tokio::test]
async fn the_health_listener_answers_probes_whatever_host_they_name() {
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
    // kubelet sends the pod IP; a probe's `host` or a Service name may be anything.
    for host in ["10.244.1.7:9902", "regate.default.svc", "attacker.example"] {
        assert_eq!(ask(health, "GET", "/healthz", Some(host)).await.0, 200);
        assert_eq!(ask(health, "GET", "/readyz", Some(host)).await.0, 200);
    }
    // It still serves nothing else.
    assert_eq!(
        ask(health, "GET", "/status", Some("localhost")).await.0,
        404
    );
    assert!(regate.stop().success());
}
