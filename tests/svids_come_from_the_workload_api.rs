//! `--spiffe-socket`: regate takes its own SVID and the trust bundles from the SPIFFE
//! Workload API, follows rotations the agent pushes, and trusts a federated trust domain's
//! bundle only for that domain's SVIDs.
//!
//! No SPIRE server or agent can be installed on these machines, so the Workload API here is
//! a server written for the test that speaks the published protocol: gRPC over HTTP/2 on a
//! Unix socket, `SpiffeWorkloadAPI/FetchX509SVID` streaming `X509SVIDResponse` messages
//! (encoded by hand from workload.proto), and refusing calls without the
//! `workload.spiffe.io: true` header, as SPIRE's agent does.

#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::convert::Infallible;
use std::path::{Path, PathBuf};
use std::pin::Pin;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use bytes::Bytes;
use common::*;
use http::{Request, Response, StatusCode};
use http_body::Frame;
use hyper::body::Incoming;
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::CertificateDer;

const PARTNER: &str = "spiffe://partner.example/ns/billing/sa/invoicer";

/// One X509SVIDResponse: regate's SVID with its trust domain's bundle, and federated
/// bundles keyed by trust domain ID.
struct Svid<'a> {
    id: &'a str,
    identity: &'a Identity,
    bundle: &'a Ca,
    federated: &'a [(&'a str, &'a Ca)],
}

fn der_of(pem: &str) -> Vec<u8> {
    CertificateDer::pem_slice_iter(pem.as_bytes())
        .flat_map(|c| c.unwrap().to_vec())
        .collect()
}

fn varint(mut n: usize, out: &mut Vec<u8>) {
    while n >= 0x80 {
        out.push((n as u8) | 0x80);
        n >>= 7;
    }
    out.push(n as u8);
}

/// A length-delimited protobuf field.
fn field(number: u8, bytes: &[u8], out: &mut Vec<u8>) {
    out.push((number << 3) | 2);
    varint(bytes.len(), out);
    out.extend_from_slice(bytes);
}

impl Svid<'_> {
    fn encode(&self) -> Vec<u8> {
        let mut svid = Vec::new();
        field(1, self.id.as_bytes(), &mut svid);
        let chain: Vec<u8> = self
            .identity
            .chain
            .iter()
            .flat_map(|c| c.to_vec())
            .collect();
        field(2, &chain, &mut svid);
        field(3, self.identity.key.secret_der(), &mut svid);
        field(4, &der_of(&self.bundle.pem), &mut svid);
        let mut response = Vec::new();
        field(1, &svid, &mut response);
        for (td, ca) in self.federated {
            let mut entry = Vec::new();
            field(1, td.as_bytes(), &mut entry);
            field(2, &der_of(&ca.pem), &mut entry);
            field(3, &entry, &mut response);
        }
        response
    }
}

/// A response body fed from a channel: the stream stays open between pushes.
struct Stream(tokio::sync::mpsc::Receiver<Frame<Bytes>>);

impl http_body::Body for Stream {
    type Data = Bytes;
    type Error = Infallible;
    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, Infallible>>> {
        self.0.poll_recv(cx).map(|f| f.map(Ok))
    }
}

/// The test's Workload API, on a thread and runtime of its own (regate's startup blocks the
/// thread that calls it while it waits for a first SVID).
struct WorkloadApi {
    socket: PathBuf,
    current: Arc<tokio::sync::watch::Sender<Vec<u8>>>,
    /// FetchX509SVID calls that carried the security header.
    calls: Arc<AtomicUsize>,
    refused: Arc<AtomicUsize>,
}

impl WorkloadApi {
    fn start(dir: &Path, first: Vec<u8>) -> WorkloadApi {
        let socket = dir.join("agent.sock");
        let current = Arc::new(tokio::sync::watch::Sender::new(first));
        let calls = Arc::new(AtomicUsize::new(0));
        let refused = Arc::new(AtomicUsize::new(0));
        let (path, updates, counted, refusals) = (
            socket.clone(),
            current.clone(),
            calls.clone(),
            refused.clone(),
        );
        let (ready, bound) = std::sync::mpsc::channel();
        std::thread::spawn(move || {
            let rt = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .unwrap();
            rt.block_on(async move {
                let listener = tokio::net::UnixListener::bind(&path).unwrap();
                ready.send(()).unwrap();
                loop {
                    let (stream, _) = listener.accept().await.unwrap();
                    let (updates, counted, refusals) =
                        (updates.clone(), counted.clone(), refusals.clone());
                    tokio::spawn(async move {
                        let service = hyper::service::service_fn(move |req: Request<Incoming>| {
                            let reply = answer(&req, &updates, &counted, &refusals);
                            async move { Ok::<_, Infallible>(reply) }
                        });
                        let _ = hyper::server::conn::http2::Builder::new(
                            hyper_util::rt::TokioExecutor::new(),
                        )
                        .serve_connection(hyper_util::rt::TokioIo::new(stream), service)
                        .await;
                    });
                }
            });
        });
        bound.recv_timeout(Duration::from_secs(10)).unwrap();
        WorkloadApi {
            socket,
            current,
            calls,
            refused,
        }
    }

    fn endpoint(&self) -> String {
        format!("unix://{}", self.socket.display())
    }

    /// Rotate: every open FetchX509SVID stream gets this response next.
    fn push(&self, response: Vec<u8>) {
        self.current.send_replace(response);
    }

    /// Withdraw the workload's identity, as an agent does when its registration entry is
    /// deleted: open streams end with PERMISSION_DENIED, and so do new calls, until a push.
    fn withdraw(&self) {
        self.current.send_replace(Vec::new());
    }
}

/// gRPC status in a trailers-only response.
fn grpc_status(code: u8, message: &str) -> Response<Stream> {
    let (_, rx) = tokio::sync::mpsc::channel(1);
    Response::builder()
        .status(StatusCode::OK)
        .header("content-type", "application/grpc")
        .header("grpc-status", code.to_string())
        .header("grpc-message", message)
        .body(Stream(rx))
        .unwrap()
}

fn answer(
    req: &Request<Incoming>,
    updates: &tokio::sync::watch::Sender<Vec<u8>>,
    calls: &AtomicUsize,
    refused: &AtomicUsize,
) -> Response<Stream> {
    if req.uri().path() != "/SpiffeWorkloadAPI/FetchX509SVID" {
        return grpc_status(12, "not implemented by the test's Workload API");
    }
    if req
        .headers()
        .get("workload.spiffe.io")
        .is_none_or(|v| v != "true")
    {
        refused.fetch_add(1, Ordering::SeqCst);
        return grpc_status(3, "security header missing from request");
    }
    if updates.borrow().is_empty() {
        return grpc_status(7, "no identity issued");
    }
    calls.fetch_add(1, Ordering::SeqCst);
    let mut current = updates.subscribe();
    let (tx, rx) = tokio::sync::mpsc::channel(4);
    tokio::spawn(async move {
        loop {
            let message = current.borrow_and_update().clone();
            if message.is_empty() {
                let mut trailers = http::HeaderMap::new();
                trailers.insert("grpc-status", http::HeaderValue::from_static("7"));
                trailers.insert(
                    "grpc-message",
                    http::HeaderValue::from_static("no identity issued"),
                );
                let _ = tx.send(Frame::trailers(trailers)).await;
                return;
            }
            let mut framed = vec![0u8];
            framed.extend_from_slice(&(message.len() as u32).to_be_bytes());
            framed.extend_from_slice(&message);
            if tx.send(Frame::data(Bytes::from(framed))).await.is_err() {
                return;
            }
            if current.changed().await.is_err() {
                return;
            }
        }
    });
    Response::builder()
        .header("content-type", "application/grpc")
        .body(Stream(rx))
        .unwrap()
}

/// The serial of the certificate regate presents to a new connection.
async fn served_serial(regate: &Regate, config: Arc<rustls::ClientConfig>) -> Option<String> {
    let tls = regate.connect(config).await.ok()?;
    Some(server_serial(&tls))
}

/// Whether regate refuses a client with `config`: at the handshake, or (TLS 1.3 checks the
/// client's certificate after the client thinks it is done) on its first request.
async fn handshake_refused(regate: &Regate, config: Arc<rustls::ClientConfig>) -> bool {
    match regate.connect(config).await {
        Err(_) => true,
        Ok(tls) => {
            let mut client = http1_over(tls).await;
            client.ready().await.is_err()
                || client
                    .send_request(request("GET", "/docs/a", b""))
                    .await
                    .is_err()
        }
    }
}

async fn status(regate: &Regate) -> serde_json::Value {
    let (code, body) = admin_get(regate.admin, "/status").await;
    assert_eq!(code, 200, "{body}");
    serde_json::from_str(&body).unwrap()
}

fn start_args(setup: &Setup, upstream: &Upstream, api: &WorkloadApi) -> Vec<String> {
    let p = |n: &str| setup.path(n).display().to_string();
    [
        "--listen",
        "127.0.0.1:0",
        "--upstream",
        &upstream.url(),
        "--spiffe-socket",
        &api.endpoint(),
        "--policies",
        &p("policies"),
        "--decision-log",
        &p("decisions.log"),
        // No polling of any kind: whatever changes comes from the Workload API's push.
        "--watch",
        "false",
        "--reload-interval",
        "0",
    ]
    .iter()
    .map(|s| s.to_string())
    .collect()
}

/// The response of an agent holding one SVID for regate, with `ca` as its trust bundle.
fn one_svid(identity: &Identity, ca: &Ca) -> Vec<u8> {
    Svid {
        id: SERVER_ID,
        identity,
        bundle: ca,
        federated: &[],
    }
    .encode()
}

/// regate on a Workload API that holds one SVID, and a summarizer's client settings.
struct OnOneSvid {
    _setup: Setup,
    _upstream: Upstream,
    agent_ca: Ca,
    api: WorkloadApi,
    regate: Regate,
    config: Arc<rustls::ClientConfig>,
    first_serial: String,
}

async fn on_one_svid() -> OnOneSvid {
    let setup = Setup::new(&[("authz.rego", ALLOW_KNOWN_CALLERS)]);
    let upstream = Upstream::start().await;
    let agent_ca = Ca::new("example.org SPIRE CA");
    let api = WorkloadApi::start(
        setup.dir.path(),
        one_svid(&agent_ca.svid(SERVER_ID), &agent_ca),
    );
    let regate = Regate::start(
        start_args(&setup, &upstream, &api),
        setup.path("decisions.log"),
    )
    .await;
    let summarizer = agent_ca.client(SUMMARIZER);
    let config = client_config(&agent_ca.pem, Some(&summarizer), &[b"http/1.1"]);
    let first_serial = served_serial(&regate, config.clone()).await.unwrap();
    // The startup fetch, then the stream regate follows: only once that is open does a
    // change on the agent's side reach it as an update.
    let following = eventually(Duration::from_secs(10), || {
        std::future::ready(api.calls.load(Ordering::SeqCst) >= 2)
    })
    .await;
    assert!(following, "regate follows the Workload API");
    OnOneSvid {
        _setup: setup,
        _upstream: upstream,
        agent_ca,
        api,
        regate,
        config,
        first_serial,
    }
}

const ALLOW_KNOWN_CALLERS: &str = r#"package regate.authz

default allow := false

allow if input.peer.spiffe_id == "spiffe://example.org/ns/agents/sa/summarizer"

allow if input.peer.spiffe_id == "spiffe://partner.example/ns/billing/sa/invoicer"
"#;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn regate_serves_its_svid_trusts_the_bundles_and_follows_a_pushed_rotation() {
    let setup = Setup::new(&[("authz.rego", ALLOW_KNOWN_CALLERS)]);
    let upstream = Upstream::start().await;
    // The Workload API's CA signs regate's SVIDs; the files Setup wrote are not used.
    let agent_ca = Ca::new("example.org SPIRE CA");
    let partner_ca = Ca::new("partner.example SPIRE CA");
    let first = agent_ca.svid(SERVER_ID);
    let api = WorkloadApi::start(
        setup.dir.path(),
        Svid {
            id: SERVER_ID,
            identity: &first,
            bundle: &agent_ca,
            federated: &[("spiffe://partner.example", &partner_ca)],
        }
        .encode(),
    );
    let regate = Regate::start(
        start_args(&setup, &upstream, &api),
        setup.path("decisions.log"),
    )
    .await;
    assert!(api.calls.load(Ordering::SeqCst) >= 1);
    assert_eq!(
        api.refused.load(Ordering::SeqCst),
        0,
        "every call carried the header"
    );

    // regate presents the SVID from the Workload API.
    let summarizer = agent_ca.client(SUMMARIZER);
    let config = client_config(&agent_ca.pem, Some(&summarizer), &[b"http/1.1"]);
    let first_serial = served_serial(&regate, config.clone()).await.unwrap();
    let expected = regate::tls::identity::PeerIdentity::from_der(&first.chain[0]).unwrap();
    assert_eq!(first_serial, expected.serial);

    // A caller of its own trust domain is verified against that domain's bundle.
    let tls = regate.connect(config.clone()).await.unwrap();
    let mut client = http1_over(tls).await;
    let (status_code, _, _) = get(&mut client, "/docs/a").await;
    assert_eq!(status_code, StatusCode::OK);

    // A federated trust domain's caller is verified against its own bundle.
    let invoicer = partner_ca.client(PARTNER);
    let partner_config = client_config(&agent_ca.pem, Some(&invoicer), &[b"http/1.1"]);
    let tls = regate.connect(partner_config).await.unwrap();
    let mut client = http1_over(tls).await;
    let (status_code, _, _) = get(&mut client, "/docs/a").await;
    assert_eq!(status_code, StatusCode::OK);

    // The federated CA cannot speak for example.org: an SVID it signed for a name of this
    // trust domain is refused at the handshake, and so is a certificate without a SPIFFE ID.
    let forged = partner_ca.client(SUMMARIZER);
    let forged_config = client_config(&agent_ca.pem, Some(&forged), &[b"http/1.1"]);
    let refused = handshake_refused(&regate, forged_config).await;
    assert!(
        refused,
        "a federated CA must not mint example.org identities"
    );
    let anonymous = agent_ca.client_with_sans(&[]);
    let anonymous_config = client_config(&agent_ca.pem, Some(&anonymous), &[b"http/1.1"]);
    let refused = handshake_refused(&regate, anonymous_config).await;
    assert!(refused, "with Workload API bundles, a caller needs an SVID");
    let before = status(&regate).await;
    assert_eq!(before["certificate"]["source"], "workload_api");
    assert_eq!(before["certificate"]["serial"], first_serial.as_str());
    let domains = before["client_ca"]["trust_domains"].as_array().unwrap();
    assert_eq!(domains.len(), 2, "{before}");
    let ca_generation = before["client_ca"]["generation"].as_u64().unwrap();

    // The agent rotates the SVID and drops the federation: pushed, not polled.
    let second = agent_ca.svid(SERVER_ID);
    api.push(one_svid(&second, &agent_ca));
    let second_serial = regate::tls::identity::PeerIdentity::from_der(&second.chain[0])
        .unwrap()
        .serial;
    assert_ne!(second_serial, first_serial);
    let rotated = eventually(Duration::from_secs(10), || async {
        served_serial(&regate, config.clone()).await.as_deref() == Some(second_serial.as_str())
    })
    .await;
    assert!(rotated, "new handshakes present the rotated SVID");

    // Seen like a file reload: /status, its reload counters and the metrics.
    let after = status(&regate).await;
    assert_eq!(after["certificate"]["serial"], second_serial.as_str());
    assert_eq!(after["reloads"]["cert"]["last_result"], "success");
    assert!(after["reloads"]["cert"]["successes"].as_u64().unwrap() >= 1);
    let trusted = eventually(Duration::from_secs(10), || async {
        let s = status(&regate).await;
        s["client_ca"]["trust_domains"] == serde_json::json!(["example.org"])
    })
    .await;
    assert!(
        trusted,
        "the federated bundle is gone from the client CA set"
    );
    let after = status(&regate).await;
    assert!(after["client_ca"]["generation"].as_u64().unwrap() > ca_generation);
    // Neither refused caller reached policy: every record is of an accepted one.
    let forged_serial = regate::tls::identity::PeerIdentity::from_der(&forged.chain[0])
        .unwrap()
        .serial;
    let records = regate.decisions(2).await;
    assert!(
        records
            .iter()
            .all(|r| r["serial"] != forged_serial.as_str()),
        "{records:?}"
    );
    let (_, metrics) = admin_get(regate.admin, "/metrics").await;
    assert!(
        metrics.contains(r#"regate_reloads_total{kind="cert",result="success"}"#),
        "{metrics}"
    );

    // A federated caller is no longer trusted once its bundle is withdrawn.
    let partner_config = client_config(&agent_ca.pem, Some(&invoicer), &[b"http/1.1"]);
    let gone = handshake_refused(&regate, partner_config).await;
    assert!(gone, "the partner's bundle was withdrawn");
    regate.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_svid_whose_key_does_not_match_is_refused_and_the_last_good_one_stays() {
    // Bound by name, not `..`: the temporary directory and the upstream must live on.
    let OnOneSvid {
        _setup,
        _upstream,
        agent_ca,
        api,
        regate,
        config,
        first_serial,
    } = on_one_svid().await;
    let first = agent_ca.svid(SERVER_ID);

    // A certificate with another SVID's key: the crate or regate refuses it.
    let other = agent_ca.svid(SERVER_ID);
    let mismatched = Identity {
        chain_pem: String::new(),
        key_pem: String::new(),
        chain: other.chain.clone(),
        key: first.key.clone_key(),
    };
    api.push(one_svid(&mismatched, &agent_ca));
    // Then a good rotation, which is served.
    let good = agent_ca.svid(SERVER_ID);
    let good_serial = regate::tls::identity::PeerIdentity::from_der(&good.chain[0])
        .unwrap()
        .serial;
    let bad_serial = regate::tls::identity::PeerIdentity::from_der(&other.chain[0])
        .unwrap()
        .serial;
    // regate's own check refuses it: a failed certificate reload, the old SVID still served.
    let refused = eventually(Duration::from_secs(10), || async {
        status(&regate).await["reloads"]["cert"]["last_result"] == "failure"
    })
    .await;
    assert!(refused, "the mismatched SVID is refused");
    let after = status(&regate).await;
    let error = after["reloads"]["cert"]["last_error"].as_str().unwrap();
    assert!(error.contains("does not match"), "{error}");
    let served = served_serial(&regate, config.clone()).await.unwrap();
    assert_ne!(
        served, bad_serial,
        "a certificate whose key regate does not hold is never served"
    );
    assert_eq!(served, first_serial);
    api.push(one_svid(&good, &agent_ca));
    let rotated = eventually(Duration::from_secs(10), || async {
        served_serial(&regate, config.clone()).await.as_deref() == Some(good_serial.as_str())
    })
    .await;
    assert!(rotated);
    regate.stop().await;
}

#[test]
fn an_unreachable_workload_api_is_a_startup_error_naming_the_socket() {
    let setup = Setup::new(&[("authz.rego", ALLOW_KNOWN_CALLERS)]);
    let socket = setup.path("missing.sock");
    let out = regate_command(&[
        "run",
        "--listen",
        "127.0.0.1:0",
        "--upstream",
        "http://127.0.0.1:9",
        "--policies",
        setup.path("policies").to_str().unwrap(),
        "--spiffe-socket",
        &format!("unix://{}", socket.display()),
        "--spiffe-startup-timeout",
        "1s",
    ]);
    assert_eq!(out.status.code(), Some(2));
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains("spiffe-socket:"), "{stderr}");
    assert!(stderr.contains("missing.sock"), "{stderr}");

    // Files and the Workload API together are refused: which would be served is unclear.
    let out = regate_command(&[
        "run",
        "--upstream",
        "http://127.0.0.1:9",
        "--policies",
        setup.path("policies").to_str().unwrap(),
        "--spiffe-socket",
        "unix:///run/spire/agent.sock",
        "--cert",
        setup.path("server.pem").to_str().unwrap(),
    ]);
    assert_eq!(out.status.code(), Some(2));
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains("cannot be combined"), "{stderr}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_withdrawn_identity_shows_as_a_failed_reload_and_the_credentials_in_force_stay() {
    // Bound by name, not `..`: the temporary directory and the upstream must live on.
    let OnOneSvid {
        _setup,
        _upstream,
        agent_ca,
        api,
        regate,
        config,
        first_serial,
    } = on_one_svid().await;

    api.withdraw();
    let failed = eventually(Duration::from_secs(10), || async {
        let s = status(&regate).await;
        s["reloads"]["cert"]["last_result"] == "failure"
            && s["reloads"]["ca"]["last_result"] == "failure"
    })
    .await;
    assert!(
        failed,
        "a withdrawal is a failed reload of the certificate and the bundles"
    );
    let s = status(&regate).await;
    let error = s["reloads"]["cert"]["last_error"].as_str().unwrap();
    assert!(error.contains("withdrawn"), "{error}");
    let (_, metrics) = admin_get(regate.admin, "/metrics").await;
    assert!(
        metrics.contains(r#"regate_reloads_total{kind="cert",result="failure"}"#),
        "{metrics}"
    );
    // Nothing new to serve or trust: the SVID and bundles in force stay, callers still pass.
    assert_eq!(
        served_serial(&regate, config.clone()).await.unwrap(),
        first_serial
    );
    let tls = regate.connect(config.clone()).await.unwrap();
    let mut client = http1_over(tls).await;
    assert_eq!(get(&mut client, "/docs/a").await.0, StatusCode::OK);

    // The agent issues an identity again: the source reconnects and it is served.
    let again = agent_ca.svid(SERVER_ID);
    let again_serial = regate::tls::identity::PeerIdentity::from_der(&again.chain[0])
        .unwrap()
        .serial;
    api.push(one_svid(&again, &agent_ca));
    let back = eventually(Duration::from_secs(30), || async {
        served_serial(&regate, config.clone()).await.as_deref() == Some(again_serial.as_str())
    })
    .await;
    assert!(back, "a new SVID after the withdrawal is served");
    regate.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn spiffe_endpoint_socket_is_used_only_when_no_credentials_are_named() {
    let setup = Setup::new(&[("authz.rego", ALLOW_KNOWN_CALLERS)]);
    let upstream = Upstream::start().await;
    let agent_ca = Ca::new("example.org SPIRE CA");
    let svid = agent_ca.svid(SERVER_ID);
    let api = WorkloadApi::start(setup.dir.path(), one_svid(&svid, &agent_ca));
    let summarizer = agent_ca.client(SUMMARIZER);
    let p = |n: &str| setup.path(n).display().to_string();
    let bare: Vec<String> = [
        "--listen",
        "127.0.0.1:0",
        "--upstream",
        &upstream.url(),
        "--policies",
        &p("policies"),
        "--decision-log",
        &p("decisions.log"),
        "--admin",
        "none",
    ]
    .iter()
    .map(|s| s.to_string())
    .collect();
    // No certificate flags: the SPIFFE convention's variable names the agent.
    let process = Process::start(&bare, &[("SPIFFE_ENDPOINT_SOCKET", &api.endpoint())]);
    let tls = tls_connect(
        process.addr,
        client_config(&agent_ca.pem, Some(&summarizer), &[b"http/1.1"]),
    )
    .await
    .unwrap();
    let expected = regate::tls::identity::PeerIdentity::from_der(&svid.chain[0]).unwrap();
    assert_eq!(server_serial(&tls), expected.serial);
    assert!(process.stop().success());

    // Named files win: the variable (here naming no agent at all) is not consulted.
    let with_files = setup.args(&upstream.url());
    let process = Process::start(
        &with_files,
        &[("SPIFFE_ENDPOINT_SOCKET", "unix:///nonexistent/agent.sock")],
    );
    let tls = tls_connect(
        process.addr,
        setup.client_config(Some(&setup.ca.client(SUMMARIZER)), &[b"http/1.1"]),
    )
    .await
    .unwrap();
    let mut client = http1_over(tls).await;
    assert_eq!(get(&mut client, "/docs/a").await.0, StatusCode::OK);
    assert!(process.stop().success());
}
