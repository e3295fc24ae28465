//! Fleet test support: OPA bundles built as `opa build` lays them out (and signed as it
//! signs them), a real nginx serving static files with ETags, a real CNCF Distribution
//! registry (Debian's `docker-registry`) pushed to over its HTTP API, and a tiny
//! long-polling server. Everything binds 127.0.0.1 and is stopped on drop.
//!
//! The OPA binary is not installable here, and the OPA Python bindings cannot build bundles,
//! so bundles are built in the test exactly as OPA's bundle writer does: `/data.json` (all
//! data, compact), each module at its path, `/.signatures.json` (indented by one space) and
//! `/.manifest`; signatures are a JWS over OPA's file digests (structured files hashed as
//! their canonical JSON).
#![allow(dead_code, clippy::unwrap_used, clippy::expect_used)]

use std::io::Write as _;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use bytes::Bytes;
use http_body_util::{BodyExt, Full};

/// A bundle to build: modules by path, the data document, the manifest.
pub struct BundleSpec {
    pub modules: Vec<(String, String)>,
    pub data: serde_json::Value,
    pub revision: String,
    pub roots: Vec<String>,
}

impl BundleSpec {
    pub fn new(revision: &str, modules: &[(&str, &str)]) -> BundleSpec {
        BundleSpec {
            modules: modules
                .iter()
                .map(|(p, t)| (p.to_string(), t.to_string()))
                .collect(),
            data: serde_json::json!({}),
            revision: revision.to_string(),
            roots: vec![String::new()],
        }
    }

    fn manifest(&self) -> Vec<u8> {
        // Go's json.Marshal of OPA's Manifest: revision, roots, then rego_version.
        // serde_json sorts keys where OPA writes them in struct order: only the bytes differ,
        // not the digest (structured files are hashed canonically).
        serde_json::to_vec(&serde_json::json!({
            "revision": self.revision,
            "roots": self.roots,
            "rego_version": 1,
        }))
        .unwrap()
    }

    /// The gzipped tarball, signed by `signer` if given.
    pub fn build(&self, signer: Option<&Signer>) -> Vec<u8> {
        let data = serde_json::to_vec(&self.data).unwrap();
        let manifest = self.manifest();
        let mut entries: Vec<(String, Vec<u8>)> = vec![("/data.json".into(), data)];
        for (path, text) in &self.modules {
            entries.push((format!("/{path}"), text.as_bytes().to_vec()));
        }
        if let Some(signer) = signer {
            let mut all = entries.clone();
            all.push(("/.manifest".into(), manifest.clone()));
            entries.push(("/.signatures.json".into(), signer.signatures(&all)));
        }
        entries.push(("/.manifest".into(), manifest));
        tarball(&entries)
    }
}

/// A gzipped tarball of `entries`, paths as given (OPA writes them with a leading `/`).
pub fn tarball(entries: &[(String, Vec<u8>)]) -> Vec<u8> {
    let gz = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::default());
    let mut builder = tar::Builder::new(gz);
    for (path, bytes) in entries {
        let mut header = tar::Header::new_gnu();
        header.set_size(bytes.len() as u64);
        header.set_mode(0o644);
        header.set_entry_type(tar::EntryType::Regular);
        // tar::Builder refuses absolute paths: write the name into the header ourselves.
        let name = path.as_bytes();
        header.as_old_mut().name[..name.len()].copy_from_slice(name);
        header.set_cksum();
        builder.append(&header, bytes.as_slice()).unwrap();
    }
    builder.into_inner().unwrap().finish().unwrap()
}

/// A bundle signing key: ES256 or EdDSA, its public half as PEM.
pub struct Signer {
    key: KeyKind,
    pub public_pem: String,
    pub key_id: String,
}

enum KeyKind {
    Es256(ring::signature::EcdsaKeyPair),
    EdDsa(ring::signature::Ed25519KeyPair),
}

impl Signer {
    pub fn es256(key_id: &str) -> Signer {
        let key = rcgen::KeyPair::generate_for(&rcgen::PKCS_ECDSA_P256_SHA256).unwrap();
        let pair = ring::signature::EcdsaKeyPair::from_pkcs8(
            &ring::signature::ECDSA_P256_SHA256_FIXED_SIGNING,
            &key.serialize_der(),
            &ring::rand::SystemRandom::new(),
        )
        .unwrap();
        Signer {
            key: KeyKind::Es256(pair),
            public_pem: key.public_key_pem(),
            key_id: key_id.into(),
        }
    }

    pub fn eddsa(key_id: &str) -> Signer {
        let key = rcgen::KeyPair::generate_for(&rcgen::PKCS_ED25519).unwrap();
        let pair =
            ring::signature::Ed25519KeyPair::from_pkcs8_maybe_unchecked(&key.serialize_der())
                .unwrap();
        Signer {
            key: KeyKind::EdDsa(pair),
            public_pem: key.public_key_pem(),
            key_id: key_id.into(),
        }
    }

    /// `.signatures.json` over `files` (path with its leading `/`, bytes), as OPA signs.
    pub fn signatures(&self, files: &[(String, Vec<u8>)]) -> Vec<u8> {
        let listed: Vec<serde_json::Value> = files
            .iter()
            .map(|(path, bytes)| {
                let name = path.trim_start_matches('/');
                let base = name.rsplit('/').next().unwrap();
                let digest = if matches!(base, "data.json" | ".manifest") {
                    // Keys sorted, no spaces: OPA's canonical form of a structured file.
                    let value: serde_json::Value = serde_json::from_slice(bytes).unwrap();
                    sha256(&serde_json::to_vec(&value).unwrap())
                } else {
                    sha256(bytes)
                };
                serde_json::json!({"name": name, "hash": digest, "algorithm": "SHA-256"})
            })
            .collect();
        let payload = serde_json::json!({"files": listed, "keyid": self.key_id});
        let alg = match self.key {
            KeyKind::Es256(_) => "ES256",
            KeyKind::EdDsa(_) => "EdDSA",
        };
        let header = serde_json::json!({"alg": alg, "kid": self.key_id});
        let b64 = |b: &[u8]| regate::builtins::crypto::b64_encode(b, true, false);
        let signing_input = format!(
            "{}.{}",
            b64(header.to_string().as_bytes()),
            b64(payload.to_string().as_bytes())
        );
        let signature = match &self.key {
            KeyKind::Es256(pair) => pair
                .sign(&ring::rand::SystemRandom::new(), signing_input.as_bytes())
                .unwrap()
                .as_ref()
                .to_vec(),
            KeyKind::EdDsa(pair) => pair.sign(signing_input.as_bytes()).as_ref().to_vec(),
        };
        let token = format!("{signing_input}.{}", b64(&signature));
        // Go's json.MarshalIndent(signatures, "", " ").
        format!("{{\n \"signatures\": [\n  \"{token}\"\n ]\n}}").into_bytes()
    }
}

fn sha256(bytes: &[u8]) -> String {
    super::sha256_hex(bytes)
}

/// A port on 127.0.0.1 free a moment ago, for a server that must be told its port.
pub fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// Debian's nginx, unprivileged, serving `root` with ETags on and no directory listing;
/// `/private/` asks for `Authorization: Bearer <token>`.
pub struct Nginx {
    dir: tempfile::TempDir,
    pub port: u16,
    child: Option<std::process::Child>,
    token: String,
    /// The last mtime stamped by [`Nginx::publish`], in seconds.
    stamped: std::sync::atomic::AtomicU64,
}

impl Nginx {
    pub fn start(token: &str) -> Nginx {
        let dir = tempfile::tempdir().unwrap();
        // nginx's workers run as nobody: they must be able to reach the files.
        std::fs::set_permissions(
            dir.path(),
            std::os::unix::fs::PermissionsExt::from_mode(0o755),
        )
        .unwrap();
        std::fs::create_dir_all(dir.path().join("www/private")).unwrap();
        std::fs::create_dir_all(dir.path().join("tmp")).unwrap();
        let mut nginx = Nginx {
            dir,
            port: free_port(),
            child: None,
            token: token.to_string(),
            stamped: std::sync::atomic::AtomicU64::new(0),
        };
        nginx.spawn();
        nginx
    }

    fn spawn(&mut self) {
        let d = self.dir.path().display();
        let conf = format!(
            r#"daemon off;
worker_processes 1;
pid {d}/nginx.pid;
error_log {d}/error.log warn;
events {{ worker_connections 1024; }}
http {{
    access_log off;
    client_body_temp_path {d}/tmp/body;
    proxy_temp_path {d}/tmp/proxy;
    fastcgi_temp_path {d}/tmp/fastcgi;
    uwsgi_temp_path {d}/tmp/uwsgi;
    scgi_temp_path {d}/tmp/scgi;
    types {{ application/gzip gz; application/json json; }}
    default_type application/octet-stream;
    keepalive_timeout 60s;
    server {{
        listen 127.0.0.1:{port};
        root {d}/www;
        autoindex off;
        etag on;
        location /private/ {{
            if ($http_authorization != "Bearer {token}") {{ return 401; }}
        }}
    }}
}}
"#,
            port = self.port,
            token = self.token,
        );
        std::fs::write(self.dir.path().join("nginx.conf"), conf).unwrap();
        let child = std::process::Command::new(nginx_binary())
            .arg("-c")
            .arg(self.dir.path().join("nginx.conf"))
            .arg("-p")
            .arg(self.dir.path())
            .arg("-e")
            .arg(self.dir.path().join("error.log"))
            .stdin(std::process::Stdio::null())
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::null())
            .spawn()
            .expect("nginx (Debian's nginx package; .ci/run installs it)");
        self.child = Some(child);
        wait_listening(self.port);
    }

    pub fn url(&self, path: &str) -> String {
        format!(
            "http://127.0.0.1:{}/{}",
            self.port,
            path.trim_start_matches('/')
        )
    }

    /// Publish `bytes` at `path`, atomically (written beside it, renamed over it).
    ///
    /// nginx's ETag is the file's mtime in seconds and its size: two publishes of equal size
    /// within one second would look unchanged (a 304). Each publish therefore stamps an
    /// mtime a second past the last one.
    pub fn publish(&self, path: &str, bytes: &[u8]) {
        let target = self
            .dir
            .path()
            .join("www")
            .join(path.trim_start_matches('/'));
        std::fs::create_dir_all(target.parent().unwrap()).unwrap();
        let tmp = target.with_extension("partial");
        let mut f = std::fs::File::create(&tmp).unwrap();
        f.write_all(bytes).unwrap();
        let now = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap()
            .as_secs();
        let stamp = now.max(self.stamped.load(std::sync::atomic::Ordering::Relaxed) + 1);
        self.stamped
            .store(stamp, std::sync::atomic::Ordering::Relaxed);
        f.set_modified(std::time::UNIX_EPOCH + Duration::from_secs(stamp))
            .unwrap();
        f.sync_all().unwrap();
        std::fs::set_permissions(&tmp, std::os::unix::fs::PermissionsExt::from_mode(0o644))
            .unwrap();
        std::fs::rename(&tmp, &target).unwrap();
    }

    /// Stop serving (the port stays reserved for [`Nginx::restart`]).
    pub fn stop(&mut self) {
        self.terminate();
        // The workers follow the master out; wait until nothing answers.
        let deadline = std::time::Instant::now() + Duration::from_secs(10);
        while std::net::TcpStream::connect(("127.0.0.1", self.port)).is_ok()
            && std::time::Instant::now() < deadline
        {
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    pub fn restart(&mut self) {
        self.stop();
        self.spawn();
    }
}

impl Nginx {
    /// SIGTERM to the master, which stops its workers (SIGKILL would orphan them, still
    /// serving); then wait for it.
    fn terminate(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = std::process::Command::new("kill")
                .arg("-TERM")
                .arg(child.id().to_string())
                .status();
            let _ = child.wait();
        }
    }
}

impl Drop for Nginx {
    fn drop(&mut self) {
        self.terminate();
    }
}

fn nginx_binary() -> PathBuf {
    ["/usr/sbin/nginx", "/usr/bin/nginx"]
        .iter()
        .map(PathBuf::from)
        .find(|p| p.exists())
        .unwrap_or_else(|| PathBuf::from("nginx"))
}

/// Wait (bounded) until something accepts on `port`.
pub fn wait_listening(port: u16) {
    let deadline = std::time::Instant::now() + Duration::from_secs(15);
    while std::net::TcpStream::connect(("127.0.0.1", port)).is_err() {
        assert!(
            std::time::Instant::now() < deadline,
            "nothing listens on 127.0.0.1:{port}"
        );
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// Debian's `docker-registry` (the CNCF Distribution registry) with filesystem storage in a
/// temporary directory, on 127.0.0.1.
pub struct Registry {
    _dir: tempfile::TempDir,
    pub port: u16,
    child: std::process::Child,
}

impl Registry {
    pub fn start() -> Registry {
        let dir = tempfile::tempdir().unwrap();
        let port = free_port();
        let config = format!(
            "version: 0.1\nlog:\n  level: error\nstorage:\n  filesystem:\n    rootdirectory: {}\n  delete:\n    enabled: true\nhttp:\n  addr: 127.0.0.1:{port}\n",
            dir.path().join("storage").display()
        );
        std::fs::write(dir.path().join("config.yml"), config).unwrap();
        let child = std::process::Command::new("docker-registry")
            .arg("serve")
            .arg(dir.path().join("config.yml"))
            .stdin(std::process::Stdio::null())
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::null())
            .spawn()
            .expect("docker-registry (Debian's package; .ci/run installs it)");
        wait_listening(port);
        Registry {
            _dir: dir,
            port,
            child,
        }
    }

    pub fn addr(&self) -> SocketAddr {
        SocketAddr::from(([127, 0, 0, 1], self.port))
    }

    /// Push `bundle` as `name:tag` the way OPA's OCI layout has it: an OCI image manifest
    /// whose config is an empty JSON object and whose one layer is the tarball.
    pub async fn push_bundle(&self, name: &str, tag: &str, bundle: &[u8]) -> String {
        let config = b"{}".to_vec();
        let config_digest = self.push_blob(name, &config).await;
        let layer_digest = self.push_blob(name, bundle).await;
        let manifest = serde_json::json!({
            "schemaVersion": 2,
            "mediaType": "application/vnd.oci.image.manifest.v1+json",
            "config": {
                "mediaType": "application/vnd.oci.image.config.v1+json",
                "digest": config_digest,
                "size": config.len(),
            },
            "layers": [{
                "mediaType": "application/vnd.oci.image.layer.v1.tar+gzip",
                "digest": layer_digest,
                "size": bundle.len(),
                "annotations": {"org.opencontainers.image.title": "bundle.tar.gz"},
            }],
        })
        .to_string();
        let (status, _, _) = http(
            self.addr(),
            "PUT",
            &format!("/v2/{name}/manifests/{tag}"),
            &[("content-type", "application/vnd.oci.image.manifest.v1+json")],
            manifest.into_bytes(),
        )
        .await;
        assert_eq!(status, 201, "manifest PUT");
        layer_digest
    }

    /// Upload a blob (POST for an upload, PUT with its digest); its digest.
    pub async fn push_blob(&self, name: &str, bytes: &[u8]) -> String {
        let digest = format!("sha256:{}", sha256(bytes));
        let (status, headers, _) = http(
            self.addr(),
            "POST",
            &format!("/v2/{name}/blobs/uploads/"),
            &[],
            Vec::new(),
        )
        .await;
        assert_eq!(status, 202, "blob upload POST");
        let location = headers
            .get("location")
            .unwrap()
            .to_str()
            .unwrap()
            .to_string();
        let path = match location.parse::<http::Uri>() {
            Ok(uri) if uri.scheme().is_some() => uri.path_and_query().unwrap().to_string(),
            _ => location,
        };
        let sep = if path.contains('?') { '&' } else { '?' };
        let (status, _, _) = http(
            self.addr(),
            "PUT",
            &format!("{path}{sep}digest={digest}"),
            &[("content-type", "application/octet-stream")],
            bytes.to_vec(),
        )
        .await;
        assert_eq!(status, 201, "blob upload PUT");
        digest
    }
}

impl Drop for Registry {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// One plain HTTP/1.1 exchange: (status, headers, body).
pub async fn http(
    addr: SocketAddr,
    method: &str,
    path: &str,
    headers: &[(&str, &str)],
    body: Vec<u8>,
) -> (u16, http::HeaderMap, Bytes) {
    let tcp = tokio::net::TcpStream::connect(addr).await.unwrap();
    let (mut send, conn) = hyper::client::conn::http1::handshake(hyper_util::rt::TokioIo::new(tcp))
        .await
        .unwrap();
    tokio::spawn(conn);
    let mut req = http::Request::builder()
        .method(method)
        .uri(path)
        .header(http::header::HOST, addr.to_string());
    for (k, v) in headers {
        req = req.header(*k, *v);
    }
    let resp = send
        .send_request(req.body(Full::new(Bytes::from(body))).unwrap())
        .await
        .unwrap();
    let status = resp.status().as_u16();
    let headers = resp.headers().clone();
    let body = resp.into_body().collect().await.unwrap().to_bytes();
    (status, headers, body)
}

/// A regate config file (YAML) in `dir` holding `yaml`; its path as a flag pair.
pub fn config_file(dir: &Path, yaml: &str) -> Vec<String> {
    let path = dir.join("regate.yaml");
    std::fs::write(&path, yaml).unwrap();
    vec!["--config".into(), path.display().to_string()]
}

/// A revocations document revoking `spiffe_ids` (regate's revocations format).
pub fn revocations_document(spiffe_ids: &[&str]) -> Vec<u8> {
    let list: Vec<serde_json::Value> = spiffe_ids
        .iter()
        .enumerate()
        .map(|(i, id)| {
            serde_json::json!({
                "id": format!("feed-{i}"),
                "spiffe_id": id,
                "reason": "revoked fleet-wide",
                "created_at": "2026-01-01T00:00:00Z",
            })
        })
        .collect();
    serde_json::to_vec(&serde_json::json!({ "revocations": list })).unwrap()
}

/// `regate run` flags for `setup` without `--policies` (the policy comes from a bundle),
/// plus `extra`.
pub fn bundle_args(setup: &super::Setup, upstream: &str, extra: Vec<String>) -> Vec<String> {
    let mut args = setup.args(upstream);
    let at = args.iter().position(|a| a == "--policies").unwrap();
    args.drain(at..at + 2);
    args.extend(extra);
    args
}

/// Start regate in this process as `args` say.
pub async fn start_regate(setup: &super::Setup, args: Vec<String>) -> super::Regate {
    super::Regate::start(args, setup.path("decisions.log")).await
}

/// `/status` of `regate`, parsed.
pub async fn status(admin: SocketAddr) -> serde_json::Value {
    let (_, body) = super::admin_get(admin, "/status").await;
    serde_json::from_str(&body).unwrap()
}

/// The policy revision `/status` shows.
pub async fn revision(admin: SocketAddr) -> String {
    status(admin).await["policy"]["revision"]
        .as_str()
        .unwrap()
        .to_string()
}

/// `args` with the value of `flag` replaced by `value`.
pub fn with_flag(mut args: Vec<String>, flag: &str, value: &str) -> Vec<String> {
    let at = args.iter().position(|a| a == flag).unwrap();
    args[at + 1] = value.to_string();
    args
}

/// A counter or gauge's value in an admin listener's `/metrics` (0 when absent).
pub async fn metric(admin: SocketAddr, series: &str) -> f64 {
    let (_, body) = super::admin_get(admin, "/metrics").await;
    body.lines()
        .find_map(|l| l.strip_prefix(series).and_then(|v| v.trim().parse().ok()))
        .unwrap_or(0.0)
}

/// How one victim connection ended after a revocation was published.
#[derive(Debug, Clone, Copy)]
pub struct Ended {
    /// Until a request was refused (403) or the connection was closed, whichever came first.
    pub denied: Duration,
    /// Until the connection was closed.
    pub closed: Duration,
}

/// Send GET `path` on `client` every few milliseconds until the connection is closed, for
/// at most `within`; when it was first refused and when it closed.
pub async fn until_denied_and_closed(
    client: &mut super::Http1,
    path: &str,
    start: tokio::time::Instant,
    within: Duration,
) -> Option<Ended> {
    let mut denied = None;
    while start.elapsed() < within {
        if client.ready().await.is_err() || client.is_closed() {
            let closed = start.elapsed();
            return Some(Ended {
                denied: denied.unwrap_or(closed),
                closed,
            });
        }
        match client.send_request(super::request("GET", path, b"")).await {
            Ok(resp) if resp.status() == 403 => {
                denied.get_or_insert(start.elapsed());
            }
            Ok(_) => {}
            Err(_) => {
                let closed = start.elapsed();
                return Some(Ended {
                    denied: denied.unwrap_or(closed),
                    closed,
                });
            }
        }
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    None
}

/// GET `path` on a fresh connection presenting `identity`: its status, or `None` when the
/// connection was closed first (regate closes a revoked caller's connections whenever the
/// revocations change, which may catch one just opened).
pub async fn answer(
    regate: &super::Regate,
    setup: &super::Setup,
    identity: &super::Identity,
    path: &str,
) -> Option<u16> {
    let tls = regate
        .connect(setup.client_config(Some(identity), &[b"http/1.1"]))
        .await
        .ok()?;
    let mut client = super::http1_over(tls).await;
    client.ready().await.ok()?;
    let resp = client
        .send_request(super::request("GET", path, b""))
        .await
        .ok()?;
    Some(resp.status().as_u16())
}

/// Refused: a 403, or the connection closed before an answer.
pub fn refused(answer: Option<u16>) -> bool {
    matches!(answer, None | Some(403))
}
