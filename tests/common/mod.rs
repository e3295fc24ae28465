//! Shared test support: a PKI made with rcgen, a recording upstream, a regate server on
//! 127.0.0.1:0, and real TLS clients. Included by each black-box test file (and the benches).
#![allow(dead_code, clippy::unwrap_used, clippy::expect_used)]

pub mod fleet;
pub mod scripted;

use std::convert::Infallible;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use bytes::Bytes;
use http::{HeaderMap, Request, Response, StatusCode};
use http_body_util::{BodyExt, Full};
use hyper::body::Incoming;
use rcgen::{
    BasicConstraints, CertificateParams, DistinguishedName, DnType, ExtendedKeyUsagePurpose, IsCa,
    Issuer, KeyPair, KeyUsagePurpose, SanType,
};
use rustls::pki_types::{CertificateDer, PrivateKeyDer, ServerName};
use tokio::net::{TcpListener, TcpStream};
use tokio_rustls::client::TlsStream;

pub const SUMMARIZER: &str = "spiffe://example.org/ns/agents/sa/summarizer";
pub const EXECUTOR: &str = "spiffe://example.org/ns/agents/sa/executor";
pub const SERVER_ID: &str = "spiffe://example.org/ns/default/sa/regate";

pub fn init() {
    let _ = rustls::crypto::ring::default_provider().install_default();
}

/// A certificate chain and its key, in PEM and in rustls form.
pub struct Identity {
    pub chain_pem: String,
    pub key_pem: String,
    pub chain: Vec<CertificateDer<'static>>,
    pub key: PrivateKeyDer<'static>,
}

impl Identity {
    fn new(chain_pem: String, key: &KeyPair) -> Identity {
        use rustls::pki_types::pem::PemObject;
        let chain = CertificateDer::pem_slice_iter(chain_pem.as_bytes())
            .collect::<Result<Vec<_>, _>>()
            .unwrap();
        let key_pem = key.serialize_pem();
        let key = PrivateKeyDer::from_pem_slice(key_pem.as_bytes()).unwrap();
        Identity {
            chain_pem,
            key_pem,
            chain,
            key,
        }
    }
}

/// A certificate authority that can issue leaves and intermediates.
pub struct Ca {
    pub pem: String,
    issuer: Issuer<'static, KeyPair>,
    /// PEM of the certificates between a leaf and the root (empty for a root).
    chain_pem: String,
}

fn validity(p: &mut CertificateParams, days_from: i64, days_to: i64) {
    let now = time::OffsetDateTime::now_utc();
    p.not_before = now + time::Duration::days(days_from);
    p.not_after = now + time::Duration::days(days_to);
}

fn dn(cn: &str) -> DistinguishedName {
    let mut d = DistinguishedName::new();
    d.push(DnType::CommonName, cn);
    d
}

impl Ca {
    pub fn new(name: &str) -> Ca {
        let key = KeyPair::generate().unwrap();
        let mut p = CertificateParams::new(Vec::<String>::new()).unwrap();
        p.distinguished_name = dn(name);
        p.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        p.key_usages = vec![KeyUsagePurpose::KeyCertSign, KeyUsagePurpose::CrlSign];
        validity(&mut p, -1, 30);
        let cert = p.self_signed(&key).unwrap();
        Ca {
            pem: cert.pem(),
            issuer: Issuer::new(p, key),
            chain_pem: String::new(),
        }
    }

    /// An intermediate CA signed by this one; its leaves carry it in their chain.
    pub fn intermediate(&self, name: &str) -> Ca {
        let key = KeyPair::generate().unwrap();
        let mut p = CertificateParams::new(Vec::<String>::new()).unwrap();
        p.distinguished_name = dn(name);
        p.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        p.key_usages = vec![KeyUsagePurpose::KeyCertSign, KeyUsagePurpose::CrlSign];
        validity(&mut p, -1, 30);
        let cert = p.signed_by(&key, &self.issuer).unwrap();
        Ca {
            pem: cert.pem(),
            chain_pem: format!("{}{}", cert.pem(), self.chain_pem),
            issuer: Issuer::new(p, key),
        }
    }

    fn leaf(&self, cn: &str, sans: Vec<SanType>, server: bool, days: (i64, i64)) -> Identity {
        let key = KeyPair::generate().unwrap();
        let mut p = CertificateParams::new(Vec::<String>::new()).unwrap();
        p.distinguished_name = dn(cn);
        p.subject_alt_names = sans;
        p.key_usages = vec![KeyUsagePurpose::DigitalSignature];
        p.extended_key_usages = vec![if server {
            ExtendedKeyUsagePurpose::ServerAuth
        } else {
            ExtendedKeyUsagePurpose::ClientAuth
        }];
        validity(&mut p, days.0, days.1);
        let cert = p.signed_by(&key, &self.issuer).unwrap();
        Identity::new(format!("{}{}", cert.pem(), self.chain_pem), &key)
    }

    /// regate's own certificate: localhost, 127.0.0.1 and its SPIFFE ID.
    pub fn server(&self) -> Identity {
        self.leaf(
            "regate test server",
            vec![
                SanType::DnsName("localhost".try_into().unwrap()),
                SanType::IpAddress([127, 0, 0, 1].into()),
                SanType::URI(SERVER_ID.try_into().unwrap()),
            ],
            true,
            (-1, 30),
        )
    }

    /// An X509-SVID as SPIRE issues one (`CA:false`, server and client auth) for
    /// `spiffe_id`, also naming localhost so a test client can check the name it dialled.
    pub fn svid(&self, spiffe_id: &str) -> Identity {
        let key = KeyPair::generate().unwrap();
        let mut p = CertificateParams::new(Vec::<String>::new()).unwrap();
        p.distinguished_name = dn("SPIRE SVID");
        p.is_ca = IsCa::ExplicitNoCa;
        p.subject_alt_names = vec![
            SanType::URI(spiffe_id.try_into().unwrap()),
            SanType::DnsName("localhost".try_into().unwrap()),
        ];
        p.key_usages = vec![
            KeyUsagePurpose::DigitalSignature,
            KeyUsagePurpose::KeyEncipherment,
        ];
        p.extended_key_usages = vec![
            ExtendedKeyUsagePurpose::ServerAuth,
            ExtendedKeyUsagePurpose::ClientAuth,
        ];
        validity(&mut p, -1, 1);
        let cert = p.signed_by(&key, &self.issuer).unwrap();
        Identity::new(format!("{}{}", cert.pem(), self.chain_pem), &key)
    }

    /// A client X509-SVID for `spiffe_id`.
    pub fn client(&self, spiffe_id: &str) -> Identity {
        self.leaf(
            "test client",
            vec![SanType::URI(spiffe_id.try_into().unwrap())],
            false,
            (-1, 30),
        )
    }

    /// A client certificate with several URI SANs (not a valid X509-SVID).
    pub fn client_with_sans(&self, uris: &[&str]) -> Identity {
        let sans = uris
            .iter()
            .map(|u| SanType::URI((*u).try_into().unwrap()))
            .collect();
        self.leaf("multi-uri client", sans, false, (-1, 30))
    }

    /// A client X509-SVID valid from a day ago until `valid_for` from now.
    pub fn client_valid_for(&self, spiffe_id: &str, valid_for: Duration) -> Identity {
        let key = KeyPair::generate().unwrap();
        let mut p = CertificateParams::new(Vec::<String>::new()).unwrap();
        p.distinguished_name = dn("short-lived client");
        p.subject_alt_names = vec![SanType::URI(spiffe_id.try_into().unwrap())];
        p.key_usages = vec![KeyUsagePurpose::DigitalSignature];
        p.extended_key_usages = vec![ExtendedKeyUsagePurpose::ClientAuth];
        let now = time::OffsetDateTime::now_utc();
        p.not_before = now - time::Duration::days(1);
        p.not_after = now + valid_for;
        let cert = p.signed_by(&key, &self.issuer).unwrap();
        Identity::new(format!("{}{}", cert.pem(), self.chain_pem), &key)
    }

    /// A client certificate whose validity ended yesterday.
    pub fn expired_client(&self, spiffe_id: &str) -> Identity {
        self.leaf(
            "expired client",
            vec![SanType::URI(spiffe_id.try_into().unwrap())],
            false,
            (-30, -1),
        )
    }
}

/// What the upstream received for one request.
#[derive(Debug, Clone)]
pub struct Seen {
    pub method: String,
    pub uri: String,
    pub version: http::Version,
    pub headers: HeaderMap,
    pub body_len: usize,
    pub body_sha256: String,
    pub trailers: Option<HeaderMap>,
}

/// A plain-HTTP application that records every request and answers 200 `ok`, echoing
/// request trailers back as response trailers (like a gRPC server's status).
pub struct Upstream {
    pub addr: SocketAddr,
    pub seen: Arc<Mutex<Vec<Seen>>>,
    /// Requests whose head has arrived (counted before any delay; `seen` is filled after).
    pub arrived: Arc<std::sync::atomic::AtomicUsize>,
    /// TCP connections the upstream accepted.
    pub connections: Arc<std::sync::atomic::AtomicUsize>,
    /// The most requests it was working on at once.
    pub peak: Arc<std::sync::atomic::AtomicUsize>,
}

impl Upstream {
    pub async fn start() -> Upstream {
        Upstream::start_with_delay(Duration::ZERO).await
    }

    /// An upstream that waits `delay` before answering.
    pub async fn start_with_delay(delay: Duration) -> Upstream {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let seen = Arc::new(Mutex::new(Vec::new()));
        let record = seen.clone();
        let arrived = Arc::new(std::sync::atomic::AtomicUsize::new(0));
        let arrivals = arrived.clone();
        let connections = Arc::new(std::sync::atomic::AtomicUsize::new(0));
        let accepted = connections.clone();
        let peak = Arc::new(std::sync::atomic::AtomicUsize::new(0));
        let working = Arc::new(std::sync::atomic::AtomicUsize::new(0));
        let highest = peak.clone();
        tokio::spawn(async move {
            loop {
                let (tcp, _) = listener.accept().await.unwrap();
                accepted.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
                tcp.set_nodelay(true).unwrap();
                let record = record.clone();
                let arrivals = arrivals.clone();
                let working = working.clone();
                let highest = highest.clone();
                tokio::spawn(async move {
                    let svc = hyper::service::service_fn(move |req| {
                        use std::sync::atomic::Ordering::SeqCst;
                        let record = record.clone();
                        arrivals.fetch_add(1, SeqCst);
                        let now = working.fetch_add(1, SeqCst) + 1;
                        highest.fetch_max(now, SeqCst);
                        let working = working.clone();
                        async move {
                            let answer = upstream_handle(req, record, delay).await;
                            working.fetch_sub(1, SeqCst);
                            answer
                        }
                    });
                    let _ = hyper_util::server::conn::auto::Builder::new(
                        hyper_util::rt::TokioExecutor::new(),
                    )
                    .serve_connection_with_upgrades(hyper_util::rt::TokioIo::new(tcp), svc)
                    .await;
                });
            }
        });
        Upstream {
            addr,
            seen,
            arrived,
            connections,
            peak,
        }
    }

    pub fn url(&self) -> String {
        format!("http://{}", self.addr)
    }

    pub fn requests(&self) -> Vec<Seen> {
        self.seen.lock().unwrap().clone()
    }
}

async fn upstream_handle(
    req: Request<Incoming>,
    record: Arc<Mutex<Vec<Seen>>>,
    delay: Duration,
) -> Result<Response<http_body_util::combinators::BoxBody<Bytes, Infallible>>, Infallible> {
    if !delay.is_zero() {
        tokio::time::sleep(delay).await;
    }
    let mut req = req;
    // WebSocket-style upgrade: accept and echo bytes on the upgraded stream.
    if req.headers().contains_key(http::header::UPGRADE) {
        let on_upgrade = hyper::upgrade::on(&mut req);
        let (parts, _) = req.into_parts();
        record
            .lock()
            .unwrap()
            .push(seen_of(&parts, 0, String::new(), None));
        tokio::spawn(async move {
            if let Ok(up) = on_upgrade.await {
                let mut io = hyper_util::rt::TokioIo::new(up);
                let (mut r, mut w) = tokio::io::split(&mut io);
                let _ = tokio::io::copy(&mut r, &mut w).await;
            }
        });
        let resp = Response::builder()
            .status(StatusCode::SWITCHING_PROTOCOLS)
            .header(http::header::UPGRADE, "websocket")
            .header(http::header::CONNECTION, "upgrade")
            .body(Full::new(Bytes::new()).boxed())
            .unwrap();
        return Ok(resp);
    }
    let (parts, mut body) = req.into_parts();
    let mut hasher = ring::digest::Context::new(&ring::digest::SHA256);
    let mut len = 0;
    let mut trailers = None;
    while let Some(frame) = body.frame().await {
        let Ok(frame) = frame else { break };
        match frame.into_data() {
            Ok(data) => {
                len += data.len();
                hasher.update(&data);
            }
            Err(frame) => trailers = frame.into_trailers().ok(),
        }
    }
    let sha = hex(hasher.finish().as_ref());
    record
        .lock()
        .unwrap()
        .push(seen_of(&parts, len, sha.clone(), trailers.clone()));
    let body = match trailers {
        Some(t) => Full::new(Bytes::from_static(b"ok"))
            .with_trailers(async move { Some(Ok(t)) })
            .boxed(),
        None => Full::new(Bytes::from(format!("ok {len} {sha}"))).boxed(),
    };
    Ok(Response::builder()
        .header("x-upstream", "yes")
        .body(body)
        .unwrap())
}

/// An HTTP/1.1 application that really switches protocols when asked, written on raw TCP so
/// nothing tidies what it receives. It records every request head it reads, then:
/// - `Upgrade: h2c`: answers `101` and speaks HTTP/2 from then on, serving any request with
///   `200 served over h2c` (the bypass regate must never open);
/// - `Upgrade: websocket` to `/switch-to-h2c`: answers `101` with `Upgrade: h2c` instead;
/// - `Upgrade: websocket`: answers `101` and echoes every byte back;
/// - `/unasked-101`: answers `101` though nobody asked, then echoes;
/// - anything else: `200 ok`, then closes the connection.
pub struct SwitchingUpstream {
    pub addr: SocketAddr,
    pub heads: Arc<Mutex<Vec<String>>>,
    /// Requests served over HTTP/2 after an h2c switch.
    pub h2_requests: Arc<Mutex<Vec<String>>>,
}

impl SwitchingUpstream {
    pub async fn start() -> SwitchingUpstream {
        use tokio::io::{AsyncReadExt, AsyncWriteExt};
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let heads = Arc::new(Mutex::new(Vec::new()));
        let h2_requests = Arc::new(Mutex::new(Vec::new()));
        let (record, h2_record) = (heads.clone(), h2_requests.clone());
        tokio::spawn(async move {
            loop {
                let (mut tcp, _) = listener.accept().await.unwrap();
                let record = record.clone();
                let h2_record = h2_record.clone();
                tokio::spawn(async move {
                    let mut buf = Vec::new();
                    let mut chunk = [0u8; 4096];
                    let end = loop {
                        if let Some(i) = buf.windows(4).position(|w| w == b"\r\n\r\n") {
                            break i + 4;
                        }
                        match tcp.read(&mut chunk).await {
                            Ok(0) | Err(_) => return,
                            Ok(n) => buf.extend_from_slice(&chunk[..n]),
                        }
                    };
                    let head = String::from_utf8_lossy(&buf[..end]).to_string();
                    record.lock().unwrap().push(head.clone());
                    let lower = head.to_ascii_lowercase();
                    let length: usize = lower
                        .lines()
                        .find_map(|l| l.strip_prefix("content-length:"))
                        .and_then(|v| v.trim().parse().ok())
                        .unwrap_or(0);
                    let mut body = buf.len() - end;
                    while body < length {
                        match tcp.read(&mut chunk).await {
                            Ok(0) | Err(_) => return,
                            Ok(n) => body += n,
                        }
                    }
                    let path = head.split(' ').nth(1).unwrap_or_default().to_string();
                    if lower.contains("\r\nupgrade: h2c") {
                        tcp.write_all(
                            b"HTTP/1.1 101 Switching Protocols\r\nconnection: upgrade\r\nupgrade: h2c\r\n\r\n",
                        )
                        .await
                        .unwrap();
                        let svc = hyper::service::service_fn(move |req: Request<Incoming>| {
                            h2_record.lock().unwrap().push(req.uri().to_string());
                            async {
                                Ok::<_, Infallible>(Response::new(Full::new(Bytes::from_static(
                                    b"served over h2c",
                                ))))
                            }
                        });
                        let _ = hyper::server::conn::http2::Builder::new(
                            hyper_util::rt::TokioExecutor::new(),
                        )
                        .serve_connection(hyper_util::rt::TokioIo::new(tcp), svc)
                        .await;
                        return;
                    }
                    let switch_to = if lower.contains("\r\nupgrade: websocket") {
                        if path == "/switch-to-h2c" {
                            Some("h2c")
                        } else {
                            Some("websocket")
                        }
                    } else if path == "/unasked-101" {
                        Some("websocket")
                    } else {
                        None
                    };
                    match switch_to {
                        Some(protocol) => {
                            let answer = format!(
                                "HTTP/1.1 101 Switching Protocols\r\nconnection: upgrade\r\nupgrade: {protocol}\r\n\r\n"
                            );
                            tcp.write_all(answer.as_bytes()).await.unwrap();
                            let (mut r, mut w) = tcp.split();
                            let _ = tokio::io::copy(&mut r, &mut w).await;
                        }
                        None => {
                            let _ = tcp
                                .write_all(
                                    b"HTTP/1.1 200 OK\r\ncontent-length: 2\r\nconnection: close\r\n\r\nok",
                                )
                                .await;
                        }
                    }
                });
            }
        });
        SwitchingUpstream {
            addr,
            heads,
            h2_requests,
        }
    }

    pub fn url(&self) -> String {
        format!("http://{}", self.addr)
    }

    pub fn heads(&self) -> Vec<String> {
        self.heads.lock().unwrap().clone()
    }
}

/// Write `request` as raw bytes on a new HTTP/1.1 TLS connection presenting `identity`, and
/// read one response: its head, and a body framed by `content-length` (or until the server
/// closes, within ten seconds). The whole answer, as text.
pub async fn raw_http1(
    regate: &Regate,
    setup: &Setup,
    identity: &Identity,
    request: &[u8],
) -> String {
    use tokio::io::AsyncWriteExt;
    let mut tls = regate
        .connect(setup.client_config(Some(identity), &[b"http/1.1"]))
        .await
        .unwrap();
    tls.write_all(request).await.unwrap();
    read_response(&mut tls).await
}

/// Read one HTTP/1.1 response from `io` (see [`raw_http1`]).
pub async fn read_response<S: tokio::io::AsyncRead + Unpin>(io: &mut S) -> String {
    use tokio::io::AsyncReadExt;
    let mut buf = Vec::new();
    let mut chunk = [0u8; 4096];
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    loop {
        if let Some(end) = buf.windows(4).position(|w| w == b"\r\n\r\n").map(|i| i + 4) {
            let head = String::from_utf8_lossy(&buf[..end]).to_ascii_lowercase();
            let status = status_of(&head);
            let length = head
                .lines()
                .find_map(|l| l.strip_prefix("content-length:"))
                .and_then(|v| v.trim().parse::<usize>().ok());
            match length {
                _ if (100..200).contains(&status) => {
                    buf.truncate(end);
                    break;
                }
                Some(n) if buf.len() >= end + n => {
                    buf.truncate(end + n);
                    break;
                }
                _ => {}
            }
        }
        match tokio::time::timeout_at(deadline, io.read(&mut chunk)).await {
            Ok(Ok(0)) | Ok(Err(_)) | Err(_) => break,
            Ok(Ok(n)) => buf.extend_from_slice(&chunk[..n]),
        }
    }
    String::from_utf8_lossy(&buf).into_owned()
}

/// The status code of the first response in `answer`.
pub fn status_of(answer: &str) -> u16 {
    answer
        .split(' ')
        .nth(1)
        .and_then(|s| s.parse().ok())
        .unwrap_or_else(|| panic!("no status in {answer:?}"))
}

/// A body of `total` bytes made of a repeating pattern, produced chunk by chunk so the
/// sender never holds it whole.
pub struct PatternBody {
    pub remaining: usize,
    chunk: Bytes,
}

impl PatternBody {
    pub fn new(total: usize) -> PatternBody {
        let chunk: Vec<u8> = (0..64 * 1024).map(|i| (i % 251) as u8).collect();
        PatternBody {
            remaining: total,
            chunk: Bytes::from(chunk),
        }
    }

    /// SHA-256 of the whole body, computed the same way, without holding it.
    pub fn sha256(total: usize) -> String {
        let mut body = PatternBody::new(total);
        let mut h = ring::digest::Context::new(&ring::digest::SHA256);
        while let Some(c) = body.next_chunk() {
            h.update(&c);
        }
        hex(h.finish().as_ref())
    }

    fn next_chunk(&mut self) -> Option<Bytes> {
        if self.remaining == 0 {
            return None;
        }
        let n = self.remaining.min(self.chunk.len());
        self.remaining -= n;
        Some(self.chunk.slice(..n))
    }
}

impl hyper::body::Body for PatternBody {
    type Data = Bytes;
    type Error = std::io::Error;
    fn poll_frame(
        mut self: std::pin::Pin<&mut Self>,
        _: &mut std::task::Context<'_>,
    ) -> std::task::Poll<Option<Result<hyper::body::Frame<Bytes>, std::io::Error>>> {
        std::task::Poll::Ready(self.next_chunk().map(|c| Ok(hyper::body::Frame::data(c))))
    }
}

fn seen_of(
    parts: &http::request::Parts,
    len: usize,
    sha: String,
    trailers: Option<HeaderMap>,
) -> Seen {
    Seen {
        method: parts.method.to_string(),
        uri: parts.uri.to_string(),
        version: parts.version,
        headers: parts.headers.clone(),
        body_len: len,
        body_sha256: sha,
        trailers,
    }
}

pub fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

pub fn sha256_hex(bytes: &[u8]) -> String {
    hex(ring::digest::digest(&ring::digest::SHA256, bytes).as_ref())
}

/// Files regate needs, written into a temporary directory.
pub struct Setup {
    pub dir: tempfile::TempDir,
    pub ca: Ca,
}

impl Setup {
    /// A CA, regate's certificate, and a policies directory holding `policies`.
    pub fn new(policies: &[(&str, &str)]) -> Setup {
        init();
        let ca = Ca::new("test root CA");
        let dir = tempfile::tempdir().unwrap();
        let server = ca.server();
        std::fs::write(dir.path().join("server.pem"), &server.chain_pem).unwrap();
        std::fs::write(dir.path().join("server.key"), &server.key_pem).unwrap();
        std::fs::write(dir.path().join("ca.pem"), &ca.pem).unwrap();
        std::fs::create_dir(dir.path().join("policies")).unwrap();
        let setup = Setup { dir, ca };
        for (name, body) in policies {
            setup.write_policy(name, body);
        }
        setup
    }

    pub fn path(&self, name: &str) -> PathBuf {
        self.dir.path().join(name)
    }

    pub fn write_policy(&self, name: &str, body: &str) {
        let path = self.path("policies").join(name);
        std::fs::create_dir_all(path.parent().unwrap()).unwrap();
        std::fs::write(path, body).unwrap();
    }

    /// The `regate run` flags for this setup, forwarding to `upstream`.
    pub fn args(&self, upstream: &str) -> Vec<String> {
        let p = |n: &str| self.path(n).display().to_string();
        vec![
            "--listen".into(),
            "127.0.0.1:0".into(),
            "--upstream".into(),
            upstream.into(),
            "--cert".into(),
            p("server.pem"),
            "--key".into(),
            p("server.key"),
            "--client-ca".into(),
            p("ca.pem"),
            "--policies".into(),
            p("policies"),
            "--decision-log".into(),
            p("decisions.log"),
            "--admin".into(),
            "127.0.0.1:0".into(),
        ]
    }

    /// Start regate in this process with `args` plus `extra`.
    pub async fn start(&self, upstream: &str, extra: &[&str]) -> Regate {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        self.start_on(listener, upstream, extra).await
    }

    /// Like [`Setup::start`], on a listener bound beforehand: for a test whose configuration
    /// names regate's own URL (and so its port).
    pub async fn start_on(&self, listener: TcpListener, upstream: &str, extra: &[&str]) -> Regate {
        let mut args = self.args(upstream);
        args.extend(extra.iter().map(|s| s.to_string()));
        Regate::start_on(listener, args, self.path("decisions.log")).await
    }

    /// TLS client settings trusting this setup's CA and presenting `identity`.
    pub fn client_config(
        &self,
        identity: Option<&Identity>,
        alpn: &[&[u8]],
    ) -> Arc<rustls::ClientConfig> {
        client_config(&self.ca.pem, identity, alpn)
    }
}

pub fn client_config(
    ca_pem: &str,
    identity: Option<&Identity>,
    alpn: &[&[u8]],
) -> Arc<rustls::ClientConfig> {
    use rustls::pki_types::pem::PemObject;
    let mut roots = rustls::RootCertStore::empty();
    for c in CertificateDer::pem_slice_iter(ca_pem.as_bytes()) {
        roots.add(c.unwrap()).unwrap();
    }
    let builder = rustls::ClientConfig::builder().with_root_certificates(roots);
    let mut config = match identity {
        Some(id) => builder
            .with_client_auth_cert(id.chain.clone(), id.key.clone_key())
            .unwrap(),
        None => builder.with_no_client_auth(),
    };
    config.alpn_protocols = alpn.iter().map(|p| p.to_vec()).collect();
    Arc::new(config)
}

/// A regate server running in this process.
pub struct Regate {
    pub addr: SocketAddr,
    /// The admin listener: /metrics, /healthz, /readyz, /status.
    pub admin: SocketAddr,
    pub decisions: PathBuf,
    pub reloader: std::sync::Arc<regate::reload::Reloader>,
    shutdown: Option<tokio::sync::oneshot::Sender<()>>,
    task: Option<tokio::task::JoinHandle<std::io::Result<()>>>,
}

#[derive(clap::Parser)]
struct RunCli {
    #[command(flatten)]
    run: regate::config::RunArgs,
}

impl Regate {
    pub async fn start(args: Vec<String>, decisions: PathBuf) -> Regate {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        Regate::start_on(listener, args, decisions).await
    }

    /// Serve on `listener` (its `--listen` argument is then only a placeholder).
    pub async fn start_on(listener: TcpListener, args: Vec<String>, decisions: PathBuf) -> Regate {
        use clap::Parser;
        init();
        let cli =
            RunCli::try_parse_from(std::iter::once("regate".to_string()).chain(args)).unwrap();
        let config = regate::Config::from_args(cli.run).unwrap();
        let app = regate::App::load(config).unwrap();
        let reloader = app.reloader();
        let addr = listener.local_addr().unwrap();
        let admin = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let admin_addr = admin.local_addr().unwrap();
        let (tx, rx) = tokio::sync::oneshot::channel::<()>();
        let task = tokio::spawn(app.serve(listener, Some(admin), async move {
            let _ = rx.await;
        }));
        Regate {
            addr,
            admin: admin_addr,
            decisions,
            reloader,
            shutdown: Some(tx),
            task: Some(task),
        }
    }

    /// Stop accepting, drain, and flush the decision log.
    pub async fn stop(mut self) {
        if let Some(tx) = self.shutdown.take() {
            let _ = tx.send(());
        }
        if let Some(task) = self.task.take() {
            task.await.unwrap().unwrap();
        }
    }

    /// Wait until the decision log holds at least `n` records, and return them all.
    pub async fn decisions(&self, n: usize) -> Vec<serde_json::Value> {
        wait_for_lines(&self.decisions, n).await
    }

    pub async fn connect(
        &self,
        config: Arc<rustls::ClientConfig>,
    ) -> std::io::Result<TlsStream<TcpStream>> {
        tls_connect(self.addr, config).await
    }

    /// An HTTP/1.1 client connection presenting `identity`.
    pub async fn http1(&self, setup: &Setup, identity: &Identity) -> Http1 {
        let tls = self
            .connect(setup.client_config(Some(identity), &[b"http/1.1"]))
            .await
            .unwrap();
        http1_over(tls).await
    }

    /// An HTTP/2 client connection presenting `identity`.
    pub async fn http2(&self, setup: &Setup, identity: &Identity) -> Http2 {
        let tls = self
            .connect(setup.client_config(Some(identity), &[b"h2"]))
            .await
            .unwrap();
        assert_eq!(tls.get_ref().1.alpn_protocol(), Some(&b"h2"[..]));
        let (send, conn) = hyper::client::conn::http2::handshake(
            hyper_util::rt::TokioExecutor::new(),
            hyper_util::rt::TokioIo::new(tls),
        )
        .await
        .unwrap();
        tokio::spawn(conn);
        send
    }
}

pub type Http1 = hyper::client::conn::http1::SendRequest<
    http_body_util::combinators::BoxBody<Bytes, std::io::Error>,
>;
pub type Http2 = hyper::client::conn::http2::SendRequest<
    http_body_util::combinators::BoxBody<Bytes, std::io::Error>,
>;

pub async fn http1_over(tls: TlsStream<TcpStream>) -> Http1 {
    let (send, conn) = hyper::client::conn::http1::handshake(hyper_util::rt::TokioIo::new(tls))
        .await
        .unwrap();
    tokio::spawn(conn.with_upgrades());
    send
}

pub async fn tls_connect(
    addr: SocketAddr,
    config: Arc<rustls::ClientConfig>,
) -> std::io::Result<TlsStream<TcpStream>> {
    let tcp = TcpStream::connect(addr).await?;
    tcp.set_nodelay(true)?;
    tokio_rustls::TlsConnector::from(config)
        .connect(ServerName::try_from("localhost").unwrap(), tcp)
        .await
}

/// A request with an in-memory body.
pub fn request(
    method: &str,
    uri: &str,
    body: &'static [u8],
) -> Request<http_body_util::combinators::BoxBody<Bytes, std::io::Error>> {
    Request::builder()
        .method(method)
        .uri(uri)
        .header(http::header::HOST, "localhost")
        .body(
            Full::new(Bytes::from_static(body))
                .map_err(|e| match e {})
                .boxed(),
        )
        .unwrap()
}

/// Send one request and collect the response.
pub async fn send(
    client: &mut Http1,
    req: Request<http_body_util::combinators::BoxBody<Bytes, std::io::Error>>,
) -> (StatusCode, HeaderMap, Bytes) {
    // On a multi-threaded runtime the connection task may not have taken in the last
    // response yet.
    client.ready().await.unwrap();
    let resp = client.send_request(req).await.unwrap();
    let (parts, body) = resp.into_parts();
    let body = body.collect().await.unwrap().to_bytes();
    (parts.status, parts.headers, body)
}

pub async fn get(client: &mut Http1, path: &str) -> (StatusCode, HeaderMap, Bytes) {
    send(client, request("GET", path, b"")).await
}

/// The records of a decision log: every JSON line but the `chain_checkpoint` lines that
/// start each run.
pub fn records_in(text: &str) -> Vec<serde_json::Value> {
    // The writer may be halfway through its last line: only whole lines count.
    let whole = &text[..text.rfind('\n').map_or(0, |i| i + 1)];
    whole
        .lines()
        .filter(|l| !l.trim().is_empty())
        .map(|l| serde_json::from_str::<serde_json::Value>(l).unwrap())
        .filter(|r| r["event"] != "chain_checkpoint")
        .collect()
}

/// Wait (bounded) until `path` holds at least `n` records (checkpoints not counted).
pub async fn wait_for_lines(path: &Path, n: usize) -> Vec<serde_json::Value> {
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    loop {
        let text = std::fs::read_to_string(path).unwrap_or_default();
        let lines = records_in(&text);
        if lines.len() >= n || tokio::time::Instant::now() > deadline {
            assert!(
                lines.len() >= n,
                "wanted {n} decision records, found {}: {text}",
                lines.len()
            );
            return lines;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

/// The example allowlist policy most tests use: summarizer may GET /docs/…, nothing else.
pub const ALLOW_DOCS: &str = r#"package regate.authz

default allow := false

allow if {
	input.peer.spiffe_id == "spiffe://example.org/ns/agents/sa/summarizer"
	input.attributes.request.http.method == "GET"
	input.parsed_path[0] == "docs"
}
"#;

/// The `regate` binary, run as an operator would, with its stderr captured.
pub struct Process {
    pub child: std::process::Child,
    pub addr: SocketAddr,
    /// The admin listener, when the process was started with one.
    pub admin: Option<SocketAddr>,
    pub stderr: Arc<Mutex<String>>,
}

impl Process {
    /// Start `regate run ARGS` and wait (bounded) until it says it is serving.
    pub fn start(args: &[String], env: &[(&str, &str)]) -> Process {
        Process::start_binary(env!("CARGO_BIN_EXE_regate"), args, env)
    }

    /// Like [`Process::start`], with another build of regate (a bench's before and after).
    pub fn start_binary(binary: &str, args: &[String], env: &[(&str, &str)]) -> Process {
        use std::io::BufRead;
        let mut cmd = std::process::Command::new(binary);
        cmd.arg("run")
            .args(args)
            .stdin(std::process::Stdio::null())
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::piped());
        for (k, v) in env {
            cmd.env(k, v);
        }
        let mut child = cmd.spawn().unwrap();
        let stderr = Arc::new(Mutex::new(String::new()));
        let (tx, rx) = std::sync::mpsc::channel();
        let pipe = child.stderr.take().unwrap();
        let sink = stderr.clone();
        let admin = Arc::new(Mutex::new(None));
        let admin_seen = admin.clone();
        std::thread::spawn(move || {
            for line in std::io::BufReader::new(pipe).lines() {
                let Ok(line) = line else { break };
                if let Some(addr) = line.split("admin=").nth(1) {
                    *admin_seen.lock().unwrap() = addr.trim().parse::<SocketAddr>().ok();
                }
                if let Some(addr) = line.split("listen=").nth(1) {
                    let _ = tx.send(addr.trim().to_string());
                }
                let mut s = sink.lock().unwrap();
                s.push_str(&line);
                s.push('\n');
            }
        });
        let addr = rx
            .recv_timeout(Duration::from_secs(30))
            .unwrap_or_else(|_| panic!("regate did not start: {}", stderr.lock().unwrap()));
        let admin = *admin.lock().unwrap();
        Process {
            child,
            addr: addr.parse().unwrap(),
            admin,
            stderr,
        }
    }

    /// Send SIGHUP: reload policies and certificates now.
    pub fn hangup(&self) {
        let _ = std::process::Command::new("kill")
            .arg("-HUP")
            .arg(self.child.id().to_string())
            .status();
    }

    pub fn stderr(&self) -> String {
        self.stderr.lock().unwrap().clone()
    }

    /// Send SIGTERM and return at once.
    pub fn terminate(&self) {
        let _ = std::process::Command::new("kill")
            .arg("-TERM")
            .arg(self.child.id().to_string())
            .status();
    }

    /// SIGTERM, then wait (bounded) for the exit.
    pub fn stop(self) -> std::process::ExitStatus {
        self.terminate();
        self.wait()
    }

    /// Wait (bounded) for the process to exit.
    pub fn wait(mut self) -> std::process::ExitStatus {
        let deadline = std::time::Instant::now() + Duration::from_secs(20);
        loop {
            if let Some(status) = self.child.try_wait().unwrap() {
                return status;
            }
            if std::time::Instant::now() > deadline {
                let _ = self.child.kill();
                panic!("regate did not exit after SIGTERM");
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// Peak resident memory so far, from /proc, in KiB.
    pub fn peak_rss_kib(&self) -> u64 {
        let status = std::fs::read_to_string(format!("/proc/{}/status", self.child.id())).unwrap();
        status
            .lines()
            .find_map(|l| l.strip_prefix("VmHWM:"))
            .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
            .unwrap()
    }

    pub async fn http1(&self, setup: &Setup, identity: &Identity) -> Http1 {
        let tls = tls_connect(
            self.addr,
            setup.client_config(Some(identity), &[b"http/1.1"]),
        )
        .await
        .unwrap();
        http1_over(tls).await
    }
}

impl Drop for Process {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// GET `path` from an admin listener over plain HTTP: (status, body).
pub async fn admin_get(addr: SocketAddr, path: &str) -> (u16, String) {
    admin_try_get(addr, path)
        .await
        .unwrap_or_else(|| panic!("admin GET {path} on {addr} failed"))
}

/// Like [`admin_get`], but `None` when the listener is gone or the exchange fails.
pub async fn admin_try_get(addr: SocketAddr, path: &str) -> Option<(u16, String)> {
    let tcp = TcpStream::connect(addr).await.ok()?;
    let (mut send, conn) = hyper::client::conn::http1::handshake(hyper_util::rt::TokioIo::new(tcp))
        .await
        .ok()?;
    tokio::spawn(conn);
    let req = Request::builder()
        .uri(path)
        .header(http::header::HOST, "localhost")
        .body(http_body_util::Empty::<Bytes>::new())
        .ok()?;
    let resp = send.send_request(req).await.ok()?;
    let status = resp.status().as_u16();
    let body = resp.into_body().collect().await.ok()?.to_bytes();
    Some((status, String::from_utf8_lossy(&body).into_owned()))
}

/// Send `method path` with a JSON `body` to an admin listener: (status, body).
pub async fn admin_send(addr: SocketAddr, method: &str, path: &str, body: &str) -> (u16, String) {
    let tcp = TcpStream::connect(addr).await.unwrap();
    let (mut send, conn) = hyper::client::conn::http1::handshake(hyper_util::rt::TokioIo::new(tcp))
        .await
        .unwrap();
    tokio::spawn(conn);
    let req = Request::builder()
        .method(method)
        .uri(path)
        .header(http::header::HOST, "localhost")
        .header(http::header::CONTENT_TYPE, "application/json")
        .body(Full::new(Bytes::from(body.to_string())))
        .unwrap();
    let resp = send.send_request(req).await.unwrap();
    let status = resp.status().as_u16();
    let body = resp.into_body().collect().await.unwrap().to_bytes();
    (status, String::from_utf8_lossy(&body).into_owned())
}

/// Poll `check` until it returns true, for at most `within`; true if it did.
pub async fn eventually<F, Fut>(within: Duration, mut check: F) -> bool
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = bool>,
{
    let deadline = tokio::time::Instant::now() + within;
    loop {
        if check().await {
            return true;
        }
        if tokio::time::Instant::now() > deadline {
            return false;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

/// Replace a file the way careful writers do: write a sibling, then rename over it.
pub fn replace_file(path: &Path, contents: &str) {
    let tmp = path.with_extension("tmp-write");
    std::fs::write(&tmp, contents).unwrap();
    std::fs::rename(&tmp, path).unwrap();
}

/// The serial (lowercase hex) of the certificate a server presented on `tls`.
pub fn server_serial(tls: &TlsStream<TcpStream>) -> String {
    let der = tls.get_ref().1.peer_certificates().unwrap()[0].clone();
    regate::tls::identity::PeerIdentity::from_der(&der)
        .unwrap()
        .serial
}

/// GET `path` on `client` until it answers `want`, for at most ten seconds; how long it took.
pub async fn wait_for_status(client: &mut Http1, path: &str, want: u16) -> Option<Duration> {
    let start = tokio::time::Instant::now();
    while start.elapsed() < Duration::from_secs(10) {
        if get(client, path).await.0 == want {
            return Some(start.elapsed());
        }
        tokio::time::sleep(Duration::from_millis(2)).await;
    }
    None
}

/// Run the `regate` binary with `args` to completion, as a policy author or CI would.
pub fn regate_command(args: &[&str]) -> std::process::Output {
    std::process::Command::new(env!("CARGO_BIN_EXE_regate"))
        .args(args)
        .stdin(std::process::Stdio::null())
        .output()
        .unwrap()
}

/// The fixed test keys of tests/builtin_vectors, as private JWKs (`rsa`, `ec256`, `ec384`).
pub fn signing_keys() -> serde_json::Value {
    let path = std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("tests/builtin_vectors/keys/signing_jwks.json");
    serde_json::from_str(&std::fs::read_to_string(path).unwrap()).unwrap()
}

/// A JWK's public half, with a kid and alg.
pub fn public_jwk(jwk: &serde_json::Value, kid: &str, alg: &str) -> serde_json::Value {
    let mut public = serde_json::Map::new();
    for field in ["kty", "crv", "x", "y", "n", "e"] {
        if let Some(v) = jwk.get(field) {
            public.insert(field.into(), v.clone());
        }
    }
    public.insert("kid".into(), kid.into());
    public.insert("alg".into(), alg.into());
    public.into()
}

/// A JWKS holding `keys`, as JSON text.
pub fn jwks(keys: &[serde_json::Value]) -> String {
    serde_json::json!({ "keys": keys }).to_string()
}

/// A compact JWS signed by regate's own `io.jwt.encode_sign_raw`.
pub fn sign_jws(
    alg: &str,
    kid: &str,
    claims: &serde_json::Value,
    jwk: &serde_json::Value,
) -> String {
    use regorus::Value;
    let (_, _, encode) = regate::builtins::jwt_sign::BUILTINS
        .iter()
        .find(|(n, _, _)| *n == "io.jwt.encode_sign_raw")
        .copied()
        .unwrap();
    let header = serde_json::json!({"alg": alg, "kid": kid, "typ": "JWT"}).to_string();
    match encode(&[
        Value::from(header),
        Value::from(claims.to_string()),
        Value::from(jwk.to_string()),
    ])
    .unwrap()
    {
        Value::String(s) => s.to_string(),
        other => panic!("{other:?}"),
    }
}

/// RFC 8705's `x5t#S256` of a certificate (DER): the base64url SHA-256 a bound token names.
pub fn cert_thumbprint(der: &[u8]) -> String {
    let digest = ring::digest::digest(&ring::digest::SHA256, der);
    regate::builtins::crypto::b64_encode(digest.as_ref(), true, false)
}
