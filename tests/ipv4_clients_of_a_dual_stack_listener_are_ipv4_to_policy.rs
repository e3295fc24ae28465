//! On a dual-stack listener (`--listen [::]:PORT`) an IPv4 client's address arrives as
//! `::ffff:a.b.c.d`. The policy sees the plain IPv4 address, and OPA's `net.cidr_contains`
//! rules for mapped addresses apply, so an IPv4 denylist cannot be walked around by
//! connecting over IPv4, and an IPv4 allowlist does not lock IPv4 clients out.

#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;
use common::*;

use clap::Parser;
use tokio::net::TcpListener;

#[derive(clap::Parser)]
struct RunCli {
    #[command(flatten)]
    run: regate::config::RunArgs,
}

/// Deny callers from 127.0.0.0/8 (a denylist), whatever form the address takes; echo what
/// the policy saw into a header.
const DENY_LOOPBACK: &str = r#"package regate.authz

import rego.v1

src := input.attributes.source.address.socketAddress.address

mapped_form := concat("", ["::ffff:", src])

default allow := false

allow := {"allowed": true, "headers": {"x-seen-source": src}} if {
	not net.cidr_contains("127.0.0.0/8", src)
	not net.cidr_contains("127.0.0.0/8", mapped_form)
}

allow := {"allowed": false, "reason": "denylisted", "headers": {"x-seen-source": src}} if {
	net.cidr_contains("127.0.0.0/8", mapped_form)
}
"#;

/// Allow only 127.0.0.0/8 (an allowlist), written as IPv4.
const ALLOW_LOOPBACK: &str = r#"package regate.authz

import rego.v1

default allow := false

allow if net.cidr_contains("127.0.0.0/8", input.attributes.source.address.socketAddress.address)
"#;

/// An IPv4 client (from 127.0.0.1) of regate serving on a dual-stack socket.
async fn ipv4_client(setup: &Setup, upstream: &str) -> (Http1, tokio::sync::oneshot::Sender<()>) {
    let (port, stop) = serve_dual_stack(setup, upstream).await;
    let addr = std::net::SocketAddr::from(([127, 0, 0, 1], port));
    let config = setup.client_config(Some(&setup.ca.client(SUMMARIZER)), &[b"http/1.1"]);
    let tls = tls_connect(addr, config).await.unwrap();
    (http1_over(tls).await, stop)
}

/// regate serving on an IPv6 socket that takes IPv4 connections, as `--listen [::]:PORT`
/// does, returning the port. Bound to the mapped loopback address rather than `[::]`, so the
/// test listens on loopback only; the peers it accepts are `::ffff:127.0.0.1` all the same.
async fn serve_dual_stack(
    setup: &Setup,
    upstream: &str,
) -> (u16, tokio::sync::oneshot::Sender<()>) {
    let args = setup.args(upstream);
    let cli = RunCli::try_parse_from(std::iter::once("regate".to_string()).chain(args)).unwrap();
    let config = regate::Config::from_args(cli.run).unwrap();
    let app = regate::App::load(config).unwrap();
    let listener = TcpListener::bind("[::ffff:127.0.0.1]:0").await.unwrap();
    // An IPv6 socket: what it accepts from 127.0.0.1 is `::ffff:127.0.0.1`.
    assert!(listener.local_addr().unwrap().is_ipv6());
    let port = listener.local_addr().unwrap().port();
    let (tx, rx) = tokio::sync::oneshot::channel::<()>();
    tokio::spawn(app.serve(listener, None, async move {
        let _ = rx.await;
    }));
    (port, tx)
}

#[tokio::test]
async fn an_ipv4_denylist_holds_for_ipv4_clients_of_a_dual_stack_listener() {
    let setup = Setup::new(&[("authz.rego", DENY_LOOPBACK)]);
    let upstream = Upstream::start().await;
    let (mut client, stop) = ipv4_client(&setup, &upstream.url()).await;
    let (status, headers, _) = get(&mut client, "/docs/readme").await;
    assert_eq!(status, 403, "{headers:?}");
    assert_eq!(
        headers["x-seen-source"], "127.0.0.1",
        "the policy saw a mapped address"
    );
    assert!(upstream.requests().is_empty());
    let records = wait_for_lines(&setup.path("decisions.log"), 1).await;
    assert_eq!(records[0]["reason"], "denylisted");
    let _ = stop.send(());
}

#[tokio::test]
async fn an_ipv4_allowlist_admits_ipv4_clients_of_a_dual_stack_listener() {
    let setup = Setup::new(&[("authz.rego", ALLOW_LOOPBACK)]);
    let upstream = Upstream::start().await;
    let (mut client, stop) = ipv4_client(&setup, &upstream.url()).await;
    let (status, _, _) = get(&mut client, "/docs/readme").await;
    assert_eq!(status, 200);
    let seen = upstream.requests();
    assert_eq!(seen.len(), 1);
    assert_eq!(seen[0].headers["x-forwarded-for"], "127.0.0.1");
    let _ = stop.send(());
}
