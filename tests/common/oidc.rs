//! A real OpenID provider for the tests: npm's `oidc-provider` (tests/fixtures/oidc), started
//! on 127.0.0.1, issuing JWT access tokens with the client-credentials grant, serving its
//! discovery document and JWKS; and the calls a test makes of it (a token, a key rotation,
//! the request counts). Included with `#[path]` by the test files that need it.
#![allow(dead_code, clippy::unwrap_used, clippy::expect_used)]

use std::io::BufRead;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use bytes::Bytes;
use http_body_util::{BodyExt, Full};

use crate::common::{client_config, Ca};

/// The client the provider knows (client-credentials grant).
pub const CLIENT_ID: &str = "agent";
const CLIENT_SECRET: &str = "agent-secret";

pub struct OidcProvider {
    child: Child,
    pub issuer: String,
    pub port: u16,
    /// The CA its HTTPS certificate chains to, as PEM; `None` over plain HTTP.
    ca_pem: Option<String>,
}

fn fixture() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/oidc")
}

impl OidcProvider {
    /// Start the provider over HTTPS with a certificate from `ca` (written into `dir`), on
    /// `port` (0: any), issuing tokens for `resources` (the first is the default).
    pub fn start(dir: &Path, ca: &Ca, resources: &[&str], port: u16) -> OidcProvider {
        let server = ca.server();
        let cert = dir.join("idp.pem");
        let key = dir.join("idp.key");
        std::fs::write(&cert, &server.chain_pem).unwrap();
        std::fs::write(&key, &server.key_pem).unwrap();
        assert!(
            fixture().join("node_modules/oidc-provider").is_dir(),
            "run `npm ci` in tests/fixtures/oidc first (.ci/run does)"
        );
        let mut child = Command::new("node")
            .arg("provider.mjs")
            .current_dir(fixture())
            .env("OIDC_CERT", &cert)
            .env("OIDC_KEY", &key)
            .env("OIDC_RESOURCES", resources.join(","))
            .env("OIDC_PORT", port.to_string())
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()
            .expect("node is installed (.ci/run installs it)");
        let stdout = child.stdout.take().unwrap();
        let (tx, rx) = std::sync::mpsc::channel();
        std::thread::spawn(move || {
            if let Some(Ok(line)) = std::io::BufReader::new(stdout).lines().next() {
                let _ = tx.send(line);
            }
        });
        let line = rx
            .recv_timeout(Duration::from_secs(30))
            .expect("the OpenID provider did not start");
        let started: serde_json::Value = serde_json::from_str(&line).unwrap();
        OidcProvider {
            child,
            issuer: started["issuer"].as_str().unwrap().to_string(),
            port: started["port"].as_u64().unwrap() as u16,
            ca_pem: Some(ca.pem.clone()),
        }
    }

    /// An access token for `resource` with `scope`, from the token endpoint.
    pub async fn token(&self, resource: &str, scope: &str) -> String {
        let body = format!(
            "grant_type=client_credentials&client_id={CLIENT_ID}&client_secret={CLIENT_SECRET}\
             &resource={}&scope={}",
            percent(resource),
            percent(scope)
        );
        let (status, answer) = self.call("POST", "/token", Some(body)).await;
        assert_eq!(status, 200, "{answer}");
        let answer: serde_json::Value = serde_json::from_str(&answer).unwrap();
        answer["access_token"].as_str().unwrap().to_string()
    }

    /// A new signing key, first in the JWKS (the old ones stay); the key ids, newest first.
    pub async fn rotate(&self) -> Vec<String> {
        let (status, answer) = self.call("POST", "/test/rotate", None).await;
        assert_eq!(status, 200, "{answer}");
        let answer: serde_json::Value = serde_json::from_str(&answer).unwrap();
        answer["kids"]
            .as_array()
            .unwrap()
            .iter()
            .map(|k| k.as_str().unwrap().to_string())
            .collect()
    }

    /// How many requests the provider has served for `what`: discovery, jwks or token.
    pub async fn served(&self, what: &str) -> u64 {
        let (status, answer) = self.call("GET", "/test/stats", None).await;
        assert_eq!(status, 200, "{answer}");
        let answer: serde_json::Value = serde_json::from_str(&answer).unwrap();
        answer[what].as_u64().unwrap()
    }

    /// Stop the provider (and wait for it to be gone).
    pub fn stop(mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }

    /// One exchange with the provider, over its TLS.
    async fn call(&self, method: &str, path: &str, form: Option<String>) -> (u16, String) {
        let tcp = tokio::net::TcpStream::connect(("127.0.0.1", self.port))
            .await
            .unwrap();
        let config = client_config(self.ca_pem.as_deref().unwrap(), None, &[b"http/1.1"]);
        let name = rustls::pki_types::ServerName::try_from("127.0.0.1").unwrap();
        let tls = tokio_rustls::TlsConnector::from(config)
            .connect(name, tcp)
            .await
            .unwrap();
        let (mut send, conn) =
            hyper::client::conn::http1::handshake(hyper_util::rt::TokioIo::new(tls))
                .await
                .unwrap();
        tokio::spawn(conn);
        let mut req = http::Request::builder()
            .method(method)
            .uri(path)
            .header(http::header::HOST, format!("127.0.0.1:{}", self.port));
        if form.is_some() {
            req = req.header(
                http::header::CONTENT_TYPE,
                "application/x-www-form-urlencoded",
            );
        }
        let req = req
            .body(Full::new(Bytes::from(form.unwrap_or_default())))
            .unwrap();
        let resp = send.send_request(req).await.unwrap();
        let status = resp.status().as_u16();
        let body = resp.into_body().collect().await.unwrap().to_bytes();
        (status, String::from_utf8_lossy(&body).into_owned())
    }
}

impl Drop for OidcProvider {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn percent(s: &str) -> String {
    s.bytes()
        .map(|b| match b {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'.' | b'_' | b'~' => {
                (b as char).to_string()
            }
            _ => format!("%{b:02X}"),
        })
        .collect()
}

/// A port nothing listens on now (bound, then let go), for a provider that starts later.
pub fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}
