//! The one HTTP(S) client the fetchers share: a GET to one server, over a connection kept
//! between polls, with the configured credentials (a bearer token file read at each request,
//! so a rotated token is used at once; or a client certificate), a deadline and a cap on the
//! body. Bundle servers, object stores, OCI registries and revocation feeds are all reached
//! through it.
//!
//! It knows nothing of bundles or revocations; `super` says what to ask and what an answer
//! means.

use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use http::{HeaderMap, HeaderName, HeaderValue, Request, StatusCode, Uri};
use http_body_util::{BodyExt, Empty, Limited};
use hyper::client::conn::http1::SendRequest;
use rustls::pki_types::ServerName;
use tokio::net::TcpStream;

use super::BundleError;

/// How regate proves itself to the server, and whom it trusts.
#[derive(Debug, Clone, Default)]
pub struct Credentials {
    /// Sent as `Authorization: Bearer <contents>`; read at every request.
    pub bearer_token_file: Option<PathBuf>,
    /// A client certificate chain and key (PEM), presented over HTTPS.
    pub client_cert: Option<PathBuf>,
    pub client_key: Option<PathBuf>,
    /// Roots to trust instead of the system's (PEM).
    pub ca_cert: Option<PathBuf>,
}

/// A response, its body read whole.
pub struct Response {
    pub status: StatusCode,
    pub headers: HeaderMap,
    pub body: Bytes,
}

impl Response {
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers.get(name).and_then(|v| v.to_str().ok())
    }
}

/// A client for one server (scheme, host and port of a URL).
pub struct Client {
    host: String,
    port: u16,
    /// `Host` as sent.
    authority: String,
    tls: Option<Arc<rustls::ClientConfig>>,
    bearer_token_file: Option<PathBuf>,
    /// The connection kept from the last request, if it is still open.
    conn: Option<SendRequest<Empty<Bytes>>>,
}

impl Client {
    /// A client for the server `url` names (`http://` or `https://`).
    pub fn new(url: &Uri, credentials: &Credentials) -> Result<Client, BundleError> {
        let bad = |m: &str| BundleError::Config(format!("{url}: {m}"));
        let host = url.host().ok_or_else(|| bad("no host"))?;
        let host = host
            .trim_start_matches('[')
            .trim_end_matches(']')
            .to_string();
        let (tls, default_port) = match url.scheme_str() {
            Some("https") => (Some(tls_config(credentials)?), 443),
            Some("http") => (None, 80),
            _ => return Err(bad("not an http:// or https:// URL")),
        };
        Ok(Client {
            port: url.port_u16().unwrap_or(default_port),
            authority: url
                .authority()
                .map_or_else(|| host.clone(), |a| a.as_str().to_string()),
            host,
            tls,
            bearer_token_file: credentials.bearer_token_file.clone(),
            conn: None,
        })
    }

    /// `GET path` with `headers`; the whole exchange within `timeout`, the body at most
    /// `max_body` bytes.
    pub async fn get(
        &mut self,
        path: &str,
        headers: &[(HeaderName, String)],
        timeout: Duration,
        max_body: usize,
    ) -> Result<Response, BundleError> {
        match tokio::time::timeout(timeout, self.exchange(path, headers, max_body)).await {
            Ok(result) => result,
            Err(_) => {
                self.conn = None;
                Err(BundleError::Fetch(format!(
                    "no answer from {} within {timeout:?}",
                    self.authority
                )))
            }
        }
    }

    async fn exchange(
        &mut self,
        path: &str,
        headers: &[(HeaderName, String)],
        max_body: usize,
    ) -> Result<Response, BundleError> {
        let mut request = Request::get(path)
            .header(http::header::HOST, &self.authority)
            .body(Empty::<Bytes>::new())
            .map_err(|e| BundleError::Fetch(format!("{path}: {e}")))?;
        for (name, value) in headers {
            if let Ok(value) = HeaderValue::from_str(value) {
                request.headers_mut().insert(name.clone(), value);
            }
        }
        if let Some(file) = &self.bearer_token_file {
            let token = std::fs::read_to_string(file).map_err(|e| {
                BundleError::Config(format!("bearer_token_file {}: {e}", file.display()))
            })?;
            let value =
                HeaderValue::from_str(&format!("Bearer {}", token.trim())).map_err(|_| {
                    BundleError::Config("the bearer token is not a header value".into())
                })?;
            request
                .headers_mut()
                .insert(http::header::AUTHORIZATION, value);
        }
        let kept = match self.conn.take() {
            Some(mut send) => send.ready().await.is_ok().then_some(send),
            None => None,
        };
        let mut send = match kept {
            Some(send) => send,
            None => self.connect().await?,
        };
        let failed =
            |e: &dyn std::fmt::Display| BundleError::Fetch(format!("{}: {e}", self.authority));
        let response = send.send_request(request).await.map_err(|e| failed(&e))?;
        let (parts, body) = response.into_parts();
        let body = Limited::new(body, max_body)
            .collect()
            .await
            .map_err(|e| failed(&e))?
            .to_bytes();
        self.conn = Some(send);
        Ok(Response {
            status: parts.status,
            headers: parts.headers,
            body,
        })
    }

    async fn connect(&self) -> Result<SendRequest<Empty<Bytes>>, BundleError> {
        let failed = |e: &dyn std::fmt::Display| {
            BundleError::Fetch(format!("cannot connect to {}: {e}", self.authority))
        };
        let tcp = TcpStream::connect((self.host.as_str(), self.port))
            .await
            .map_err(|e| failed(&e))?;
        let _ = tcp.set_nodelay(true);
        match &self.tls {
            None => handshake(tcp).await.map_err(|e| failed(&e)),
            Some(config) => {
                let name = ServerName::try_from(self.host.clone()).map_err(|e| failed(&e))?;
                let tls = tokio_rustls::TlsConnector::from(config.clone())
                    .connect(name, tcp)
                    .await
                    .map_err(|e| failed(&e))?;
                handshake(tls).await.map_err(|e| failed(&e))
            }
        }
    }
}

async fn handshake<S>(io: S) -> Result<SendRequest<Empty<Bytes>>, hyper::Error>
where
    S: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin + Send + 'static,
{
    let (send, conn) =
        hyper::client::conn::http1::handshake(hyper_util::rt::TokioIo::new(io)).await?;
    tokio::spawn(async move {
        if let Err(e) = conn.await {
            tracing::debug!(error = %e, "fetch connection ended");
        }
    });
    Ok(send)
}

/// TLS to the server: the configured roots (else the system's), and the client certificate
/// when one is configured.
fn tls_config(credentials: &Credentials) -> Result<Arc<rustls::ClientConfig>, BundleError> {
    use rustls::pki_types::pem::PemObject;
    use rustls::pki_types::{CertificateDer, PrivateKeyDer};
    let bad = |m: String| BundleError::Config(m);
    let mut roots = rustls::RootCertStore::empty();
    match &credentials.ca_cert {
        Some(path) => {
            for cert in CertificateDer::pem_file_iter(path)
                .map_err(|e| bad(format!("ca_cert {}: {e}", path.display())))?
            {
                let cert = cert.map_err(|e| bad(format!("ca_cert {}: {e}", path.display())))?;
                roots
                    .add(cert)
                    .map_err(|e| bad(format!("ca_cert {}: {e}", path.display())))?;
            }
        }
        None => {
            for cert in rustls_native_certs::load_native_certs().certs {
                let _ = roots.add(cert);
            }
        }
    }
    let builder = rustls::ClientConfig::builder_with_provider(Arc::new(
        rustls::crypto::ring::default_provider(),
    ))
    .with_safe_default_protocol_versions()
    .map_err(|e| bad(e.to_string()))?
    .with_root_certificates(roots);
    let config = match (&credentials.client_cert, &credentials.client_key) {
        (Some(cert), Some(key)) => {
            let chain = CertificateDer::pem_file_iter(cert)
                .and_then(|certs| certs.collect::<Result<Vec<_>, _>>())
                .map_err(|e| bad(format!("client_cert {}: {e}", cert.display())))?;
            let key = PrivateKeyDer::from_pem_file(key)
                .map_err(|e| bad(format!("client_key {}: {e}", key.display())))?;
            builder
                .with_client_auth_cert(chain, key)
                .map_err(|e| bad(format!("client certificate: {e}")))?
        }
        _ => builder.with_no_client_auth(),
    };
    Ok(Arc::new(config))
}
