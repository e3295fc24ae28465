//! What the AI-agent features cost per request: verifying a delegation token (ES256 and
//! RS256, bound to the client certificate; keys from a JWKS file, and from a remote JWKS
//! fetched over loopback HTTP and cached), asking the kill switch, and examining a JSON body
//! (parsing it and finding its MCP tool calls), each on its own, as the proxy does them before
//! the policy.
//!
//! A plain `fn main`; BENCHMARKS.md keeps the figures. Each measurement is bounded by a count
//! and a deadline, and nothing asserts on a timing.

#![allow(clippy::unwrap_used, clippy::expect_used)]

#[path = "../tests/common/mod.rs"]
mod common;

use std::hint::black_box;
use std::time::{Duration, Instant, SystemTime};

use http::HeaderMap;
use regate::delegation::{IssuerConfig, Settings, Verifier};
use regate::revocations::Revocations;
use regate::tls::identity::PeerIdentity;

const ISSUER: &str = "https://idp.example.org";
/// The same keys, fetched from a JWKS URL.
const REMOTE_ISSUER: &str = "https://remote-idp.example.org";

/// Serve `jwks` at `/jwks` on loopback, as an identity provider would; its URL.
async fn serve_jwks(jwks: String) -> String {
    use http_body_util::Full;
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move {
        loop {
            let (tcp, _) = listener.accept().await.unwrap();
            let jwks = jwks.clone();
            tokio::spawn(async move {
                let service = hyper::service::service_fn(move |_req| {
                    let body = Full::new(bytes::Bytes::from(jwks.clone()));
                    async move { Ok::<_, std::convert::Infallible>(http::Response::new(body)) }
                });
                let _ = hyper::server::conn::http1::Builder::new()
                    .serve_connection(hyper_util::rt::TokioIo::new(tcp), service)
                    .await;
            });
        }
    });
    format!("http://{addr}/jwks")
}

fn median_us(runs: usize, limit: Duration, mut f: impl FnMut()) -> (f64, usize) {
    let mut times = Vec::with_capacity(runs);
    let deadline = Instant::now() + limit;
    while times.len() < runs && Instant::now() < deadline {
        let start = Instant::now();
        f();
        times.push(start.elapsed().as_nanos() as f64 / 1000.0);
    }
    times.sort_by(|a, b| a.total_cmp(b));
    (times[times.len() / 2], times.len())
}

fn main() {
    let quick = std::env::var_os("REGATE_BENCH_QUICK").is_some();
    let (runs, limit) = match quick {
        true => (2_000, Duration::from_secs(2)),
        false => (20_000, Duration::from_secs(10)),
    };
    let keys = common::signing_keys();
    let dir = tempfile::tempdir().unwrap();
    let jwks = dir.path().join("jwks.json");
    let set = serde_json::json!({"keys": [
        common::public_jwk(&keys["ec256"], "ec1", "ES256"),
        common::public_jwk(&keys["rsa"], "rsa1", "RS256"),
    ]});
    std::fs::write(&jwks, set.to_string()).unwrap();
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    let jwks_uri = runtime.block_on(serve_jwks(set.to_string()));
    let issuer = |name: &str| IssuerConfig {
        issuer: name.into(),
        audiences: vec!["regate".into()],
        jwks_file: None,
        jwks_uri: None,
        discovery: false,
        ca: None,
        algorithms: vec!["ES256".into(), "RS256".into()],
        require_binding: true,
    };
    let verifier = Verifier::load(Settings {
        issuers: vec![
            IssuerConfig {
                jwks_file: Some(jwks),
                ..issuer(ISSUER)
            },
            IssuerConfig {
                jwks_uri: Some(jwks_uri),
                ..issuer(REMOTE_ISSUER)
            },
        ],
        ..Settings::default()
    })
    .unwrap();
    let metrics = std::sync::Arc::new(regate::metrics::Metrics::new());
    let staleness = Settings::default().max_staleness;
    for fetcher in
        regate::delegation::jwks::fetchers(verifier.issuers(), staleness, &metrics).unwrap()
    {
        runtime.spawn(fetcher.run());
    }
    runtime.block_on(async {
        let deadline = Instant::now() + Duration::from_secs(10);
        while verifier.ready().is_err() && Instant::now() < deadline {
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
    });
    verifier.ready().unwrap();
    let cert_sha256 = [7u8; 32];
    let query = std::collections::BTreeMap::new();
    let thumb = regate::builtins::crypto::b64_encode(&cert_sha256, true, false);
    let now = SystemTime::now()
        .duration_since(SystemTime::UNIX_EPOCH)
        .unwrap()
        .as_secs();
    let claims = serde_json::json!({
        "iss": ISSUER, "sub": "alice", "aud": "regate", "exp": now + 3600, "jti": "t-1",
        "scope": "docs:read", "act": {"sub": "agent"}, "cnf": {"x5t#S256": thumb},
    });

    println!("| what | median µs | runs |");
    println!("|---|---:|---:|");
    let verify = |headers: &HeaderMap| {
        runtime.block_on(verifier.verify(
            black_box(headers),
            &query,
            &cert_sha256,
            SystemTime::now(),
        ))
    };
    for (alg, kid, key) in [("ES256", "ec1", "ec256"), ("RS256", "rsa1", "rsa")] {
        // Interleaved, so both sources see the same machine.
        for (source, iss) in [
            ("JWKS file", ISSUER),
            ("remote JWKS, cached", REMOTE_ISSUER),
        ] {
            let mut claims = claims.clone();
            claims["iss"] = iss.into();
            let token = common::sign_jws(alg, kid, &claims, &keys[key]);
            let mut headers = HeaderMap::new();
            headers.insert("authorization", format!("Bearer {token}").parse().unwrap());
            assert!(verify(&headers).unwrap().is_some());
            let (us, n) = median_us(runs, limit, || {
                black_box(verify(&headers)).ok();
            });
            println!(
                "| delegation token, {alg}, bound, {source}, verified and turned into input | {us:.1} | {n} |"
            );
        }
    }
    let headers = HeaderMap::new();
    let (us, n) = median_us(runs, limit, || {
        black_box(verify(&headers)).ok();
    });
    println!("| no token (issuers configured) | {us:.2} | {n} |");

    let peer = PeerIdentity {
        spiffe_id: regate::tls::identity::SpiffeId::parse("spiffe://example.org/ns/a/sa/agent"),
        uri_sans: Vec::new(),
        dns_sans: Vec::new(),
        subject: String::new(),
        issuer: String::new(),
        serial: "0a1b2c".into(),
        fingerprint_sha256: String::new(),
        not_before: 0,
        not_after: i64::MAX,
    };
    let revocations = Revocations::load(None).unwrap();
    let (us, n) = median_us(runs, limit, || {
        black_box(revocations.revoked(black_box(&peer)));
    });
    println!("| kill switch, nothing revoked | {us:.3} | {n} |");
    for i in 0..1000 {
        let body = format!(
            r#"{{"spiffe_id": "spiffe://example.org/ns/a/sa/other-{i}", "reason": "bench"}}"#
        );
        revocations.add(body.as_bytes()).unwrap();
    }
    let (us, n) = median_us(runs, limit, || {
        black_box(revocations.revoked(black_box(&peer)));
    });
    println!("| kill switch, 1,000 others revoked | {us:.3} | {n} |");

    let tool_call = br#"{"jsonrpc": "2.0", "id": 7, "method": "tools/call", "params": {"name": "read_doc", "arguments": {"path": "/docs/handbook/onboarding.md", "max_bytes": 65536}}}"#;
    let batch = format!(
        "[{}]",
        (0..10)
            .map(|_| String::from_utf8_lossy(tool_call).into_owned())
            .collect::<Vec<_>>()
            .join(",")
    );
    let big = format!(
        r#"{{"jsonrpc": "2.0", "id": 1, "method": "tools/call", "params": {{"name": "summarize", "arguments": {{"text": "{}"}}}}}}"#,
        "lorem ipsum ".repeat(8_500)
    );
    for (what, body) in [
        ("one MCP tools/call, 160 bytes", tool_call.to_vec()),
        ("a batch of 10 tools/call, 1.6 KB", batch.into_bytes()),
        ("one tools/call with 100 KB of arguments", big.into_bytes()),
    ] {
        let body = bytes::Bytes::from(body);
        let (us, n) = median_us(runs, limit, || {
            black_box(regate::request::body::examine(black_box(body.clone())));
        });
        println!("| JSON body examined: {what} | {us:.1} | {n} |");
        // The parse alone, with and without the checks for repeated and case-folded keys.
        let (us, n) = median_us(runs, limit, || {
            black_box(regate::request::json::parse(black_box(&body)).ok());
        });
        println!("| parsed with the ambiguous-key checks: {what} | {us:.1} | {n} |");
        let (us, n) = median_us(runs, limit, || {
            black_box(serde_json::from_slice::<serde_json::Value>(black_box(&body)).ok());
        });
        println!("| parsed by serde_json alone: {what} | {us:.1} | {n} |");
    }
}
