//! One kill switch for the fleet, measured: 20 regate instances on 127.0.0.1 (in this
//! process) share one revocations feed; the victim holds a keep-alive connection to each;
//! one revocation is published and, per instance, the time until it denies the victim and
//! until it closes the victim's connection is taken. Twice: the feed served by a real nginx
//! (static file, ETag, 1 s polling), and by a tiny long-polling server written here (it holds
//! a `Prefer: wait=N` request until the document changes, as an OPA bundle server does).
//! Then the cost of a bundle activation: reading (unpacking, verifying) and compiling a
//! bundle against compiling the same files from a directory.
//!
//! A plain `fn main`; BENCHMARKS.md keeps the figures. Every loop is bounded by a count and a
//! deadline; nothing asserts on a timing.

#![allow(clippy::unwrap_used, clippy::expect_used)]

#[path = "../tests/common/mod.rs"]
mod common;

use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use common::fleet::*;
use common::*;
use http_body_util::Full;

const REPLICAS: usize = 20;
const ROUNDS: usize = 3;
const WAIT: Duration = Duration::from_secs(20);

/// Where the feed comes from.
enum Feed {
    Nginx(Nginx),
    LongPoll(LongPoll),
}

impl Feed {
    fn publish(&self, bytes: &[u8]) {
        match self {
            Feed::Nginx(n) => n.publish("revocations.json", bytes),
            Feed::LongPoll(l) => l.publish(bytes),
        }
    }

    fn config(&self) -> String {
        match self {
            Feed::Nginx(n) => format!(
                "revocations_feed:\n  url: {}\n  polling: 1s\n",
                n.url("revocations.json")
            ),
            Feed::LongPoll(l) => format!(
                "revocations_feed:\n  url: http://{}/revocations.json\n  polling: 1s\n  long_polling_timeout: 30s\n",
                l.addr
            ),
        }
    }
}

/// A feed server that holds a request carrying `If-None-Match` of the current ETag and
/// `Prefer: wait=N` until the document changes (or N seconds pass: 304), and says it long
/// polls with OPA's content type.
struct LongPoll {
    addr: SocketAddr,
    doc: Arc<tokio::sync::watch::Sender<(u64, Bytes)>>,
}

impl LongPoll {
    async fn start(initial: &[u8]) -> LongPoll {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let (tx, _) = tokio::sync::watch::channel((1u64, Bytes::copy_from_slice(initial)));
        let doc = Arc::new(tx);
        let serving = doc.clone();
        tokio::spawn(async move {
            loop {
                let Ok((tcp, _)) = listener.accept().await else {
                    return;
                };
                let doc = serving.clone();
                tokio::spawn(async move {
                    let svc = hyper::service::service_fn(move |req: http::Request<_>| {
                        let doc = doc.clone();
                        async move { Ok::<_, Infallible>(answer_long_poll(&doc, &req).await) }
                    });
                    let _ = hyper::server::conn::http1::Builder::new()
                        .serve_connection(hyper_util::rt::TokioIo::new(tcp), svc)
                        .await;
                });
            }
        });
        LongPoll { addr, doc }
    }

    fn publish(&self, bytes: &[u8]) {
        self.doc
            .send_modify(|(n, b)| (*n, *b) = (*n + 1, Bytes::copy_from_slice(bytes)));
    }
}

async fn answer_long_poll<B>(
    doc: &tokio::sync::watch::Sender<(u64, Bytes)>,
    req: &http::Request<B>,
) -> http::Response<Full<Bytes>> {
    let mut rx = doc.subscribe();
    let seen = req
        .headers()
        .get("if-none-match")
        .and_then(|v| v.to_str().ok())
        .map(|v| v.trim_matches('"').to_string());
    let wait = req
        .headers()
        .get("prefer")
        .and_then(|v| v.to_str().ok())
        .and_then(|p| p.split(';').find_map(|kv| kv.trim().strip_prefix("wait=")))
        .and_then(|w| w.parse::<u64>().ok());
    let current = |rx: &tokio::sync::watch::Receiver<(u64, Bytes)>| rx.borrow().0.to_string();
    if seen.as_deref() == Some(current(&rx).as_str()) {
        if let Some(wait) = wait {
            let _ = tokio::time::timeout(Duration::from_secs(wait), rx.changed()).await;
        }
    }
    let (version, bytes) = rx.borrow().clone();
    let etag = format!("\"{version}\"");
    let builder = http::Response::builder()
        .header("etag", &etag)
        .header("content-type", "application/vnd.openpolicyagent.bundles");
    if seen.as_deref() == Some(version.to_string().as_str()) {
        return builder.status(304).body(Full::new(Bytes::new())).unwrap();
    }
    builder.status(200).body(Full::new(bytes)).unwrap()
}

/// Revoke the victim on every replica, `ROUNDS` times; every instance's [`Ended`].
async fn measure(setup: &Setup, feed: &Feed, fleet: &[Regate]) -> Vec<Ended> {
    let victim = setup.ca.client(SUMMARIZER);
    let mut all = Vec::new();
    for _ in 0..ROUNDS {
        feed.publish(&revocations_document(&[]));
        for regate in fleet {
            let lifted = eventually(WAIT, || async {
                answer(regate, setup, &victim, "/docs/a").await == Some(200)
            })
            .await;
            assert!(lifted, "the revocation was never lifted");
        }
        let mut clients = Vec::new();
        for regate in fleet {
            let mut client = regate.http1(setup, &victim).await;
            assert_eq!(get(&mut client, "/docs/a").await.0, 200);
            clients.push(client);
        }
        // Published just after a poll or just before one: spread over the polling interval.
        tokio::time::sleep(Duration::from_millis(100 + 300 * all.len() as u64 % 900)).await;
        feed.publish(&revocations_document(&[SUMMARIZER]));
        let start = tokio::time::Instant::now();
        let waits: Vec<_> = clients
            .into_iter()
            .map(|mut client| {
                tokio::spawn(async move {
                    until_denied_and_closed(&mut client, "/docs/a", start, WAIT).await
                })
            })
            .collect();
        for wait in waits {
            all.push(wait.await.unwrap().expect("an instance never closed"));
        }
    }
    all
}

fn percentile(mut v: Vec<Duration>, p: f64) -> Duration {
    v.sort();
    v[((v.len() - 1) as f64 * p).round() as usize]
}

fn report(name: &str, ended: &[Ended]) {
    let denied: Vec<_> = ended.iter().map(|e| e.denied).collect();
    let closed: Vec<_> = ended.iter().map(|e| e.closed).collect();
    println!(
        "{name}: {} samples; denied p50 {:.0} ms, max {:.0} ms; closed p50 {:.0} ms, max {:.0} ms",
        ended.len(),
        percentile(denied.clone(), 0.5).as_secs_f64() * 1e3,
        percentile(denied, 1.0).as_secs_f64() * 1e3,
        percentile(closed.clone(), 0.5).as_secs_f64() * 1e3,
        percentile(closed, 1.0).as_secs_f64() * 1e3,
    );
}

async fn fleet(setup: &Setup, feed: &Feed, upstream: &str, tag: &str) -> Vec<Regate> {
    let dir = setup.path(tag);
    std::fs::create_dir_all(&dir).unwrap();
    let mut fleet = Vec::new();
    for i in 0..REPLICAS {
        let log = dir.join(format!("d{i}.log"));
        let mut args = with_flag(
            setup.args(upstream),
            "--decision-log",
            &log.display().to_string(),
        );
        let conf = dir.join(format!("r{i}"));
        std::fs::create_dir_all(&conf).unwrap();
        args.extend(config_file(&conf, &feed.config()));
        fleet.push(Regate::start(args, log).await);
    }
    fleet
}

async fn bundle_activation() {
    let policy =
        std::fs::read_to_string("policies/authz.rego").unwrap_or_else(|_| ALLOW_DOCS.to_string());
    let mut spec = BundleSpec::new("r1", &[("regate/authz/policy.rego", &policy)]);
    spec.roots = vec!["regate".into()];
    let signer = Signer::es256("k1");
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("key.pem"), &signer.public_pem).unwrap();
    std::fs::create_dir_all(dir.path().join("policies/regate/authz")).unwrap();
    std::fs::write(
        dir.path().join("policies/regate/authz/policy.rego"),
        &policy,
    )
    .unwrap();
    let verification =
        regate::bundle::verify::Verification::load(&dir.path().join("key.pem"), "k1", "").unwrap();
    let unsigned = spec.build(None);
    let signed = spec.build(Some(&signer));
    let options = regate::policy::Options::new("data.regate.authz.allow", Duration::from_secs(1));
    const N: u32 = 200;
    let time = |f: &dyn Fn()| {
        f();
        let start = Instant::now();
        for _ in 0..N {
            f();
        }
        start.elapsed() / N
    };
    let directory = time(&|| {
        regate::policy::PolicySet::load(&dir.path().join("policies"), &options).unwrap();
    });
    let bundle = time(&|| {
        let b = regate::bundle::archive::read(&unsigned, None).unwrap();
        regate::policy::PolicySet::compile(b.sources, &options).unwrap();
    });
    let signed_bundle = time(&|| {
        let b = regate::bundle::archive::read(&signed, Some(&verification)).unwrap();
        regate::policy::PolicySet::compile(b.sources, &options).unwrap();
    });
    let read_only = time(&|| {
        regate::bundle::archive::read(&signed, Some(&verification)).unwrap();
    });
    println!(
        "bundle activation ({} bytes gzipped): directory {:.2} ms; bundle {:.2} ms ({:.2}x); signed bundle {:.2} ms ({:.2}x); unpack+verify alone {:.3} ms",
        signed.len(),
        directory.as_secs_f64() * 1e3,
        bundle.as_secs_f64() * 1e3,
        bundle.as_secs_f64() / directory.as_secs_f64(),
        signed_bundle.as_secs_f64() * 1e3,
        signed_bundle.as_secs_f64() / directory.as_secs_f64(),
        read_only.as_secs_f64() * 1e3,
    );
}

fn main() {
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(4)
        .enable_all()
        .build()
        .unwrap();
    rt.block_on(async {
        bundle_activation().await;
        let setup = Setup::new(&[("authz.rego", ALLOW_DOCS)]);
        let upstream = Upstream::start().await;

        let nginx = Feed::Nginx(Nginx::start("unused"));
        nginx.publish(&revocations_document(&[]));
        let replicas = fleet(&setup, &nginx, &upstream.url(), "nginx").await;
        let ended = measure(&setup, &nginx, &replicas).await;
        report("nginx feed, 1 s polling", &ended);
        for r in replicas {
            r.stop().await;
        }

        let long = Feed::LongPoll(LongPoll::start(&revocations_document(&[])).await);
        let replicas = fleet(&setup, &long, &upstream.url(), "long").await;
        let ended = measure(&setup, &long, &replicas).await;
        report("long-polling feed (wait=30)", &ended);
        for r in replicas {
            r.stop().await;
        }
    });
}
